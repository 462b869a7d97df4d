"""The Kafka -> Celery bridge: the loop (``consumer``) and its pure parts — the dynamic
ceiling (``ceiling``), backpressure and backoff (``flow``), commit-after-store bookkeeping
(``offsets``) — the queue-depth probe (``depth``) and its Prometheus metrics (``metrics``)."""
