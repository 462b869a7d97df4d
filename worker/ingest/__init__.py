"""Ingestion, Kafka -> Celery -> event store: the bridge, the publisher, the stored-then-confirmed
handshake (``acks``) and the dead letters; the ingest task itself is ``tasks/ingest.py``."""
