"""Trend runs: the vectorized math (``math``, pure), a run's identity and chunks
(``planning``, pure), the one lifecycle of a run (``lifecycle``: begin, chunk, finish,
fail), its state in PostgreSQL behind a small interface (``state``) and the per-duration
lease (``lease``). The Celery tasks are ``tasks/trends.py``; ``aggregator trends run`` is
``worker/ops/commands/trends.py``: both drive the same ``TrendRuns``."""
