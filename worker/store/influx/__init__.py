"""The InfluxDB 2 event store: a thin adapter (``store``) over pure parts — line protocol
(``lineprotocol``), Flux queries (``flux``) and the downsampling tasks (``tasks``)."""
