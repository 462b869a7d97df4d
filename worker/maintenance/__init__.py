"""Operating for years: partitions ahead, retention, history thinning. ``run`` carries out
the plan of :mod:`worker.core.retention`; ``thinning`` picks the history rows a thinned day
keeps. The beat task is ``tasks/maintenance.py``, the command ``aggregator maintain``."""
