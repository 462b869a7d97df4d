"""Operating for years: partitions ahead, retention, history thinning (``aggregator maintain``)."""
