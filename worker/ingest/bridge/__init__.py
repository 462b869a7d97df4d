"""The Kafka -> Celery bridge: the loop (``consumer``) driving its steps — decode, batch
(``ceiling``), publish, commit, pause — over the pure policies (``flow``, ``offsets``,
``dlq_guard``), the queue-depth probe (``depth``) and its Prometheus metrics (``metrics``)."""
