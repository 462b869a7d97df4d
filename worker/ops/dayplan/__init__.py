"""`aggregator schedule`: the day's plan of every scheduled job, as a heatmap (the seed's Figure 1)."""
