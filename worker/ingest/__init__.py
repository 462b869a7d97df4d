"""Ingestion, Kafka -> Celery -> event store: the bridge loop and its pure policies
(``bridge/``), the Celery publisher (``publisher``), the stored-then-confirmed handshake
(``acks``), dead letters and their replay (``deadletter``, ``replay``) and what every Kafka
client shares (``kafka_config``). The ingest task itself is ``tasks/ingest.py``."""
