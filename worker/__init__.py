"""Trend aggregator for scholarly altmetrics: processes, stores and pure computation.

Layout: ``events`` (decode/validate), ``bridge/`` (Kafka -> Celery), ``store/`` (event
stores), ``trends/`` (math and publishing), ``post/`` (the morning post), ``db/``
(PostgreSQL access and migrations), ``devstack/`` (local services), ``cli`` (the
`aggregator` command). Celery task definitions live in the top-level ``tasks`` package.
"""
