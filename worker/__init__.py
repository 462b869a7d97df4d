"""Trend aggregator for scholarly altmetrics.

One package per concern, in layers (each imports only those below it; ``lint-imports``
checks it, see ``[tool.importlinter]`` in pyproject.toml and docs/development.md):

    ops (the ``aggregator`` command)        tasks (top level: the Celery tasks)
    celeryapp   the Celery app, beat entries, per-process resources built from settings
    ingest | trends | post | maintenance    the domains, independent of one another
    store       the event-store port and its PostgreSQL and InfluxDB backends
    db          PostgreSQL connections, migrations, partition DDL
    config      settings from the environment, logging
    core        pure: events, durations, cron, alignment, partitions, retention, names

``worker/app.py`` is a shim kept for ``celery -A worker.app``.
"""
