"""The Kafka bridge: Kafka topic -> rate-limited Celery ingest queue (see ``consumer``)."""
