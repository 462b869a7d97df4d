"""Pure code every other package builds on: it imports nothing of the project.

Event decoding and the wire codec (``events``), the durations table (``durations``), cron
parsing (``cron``), span and window alignment (``alignment``), the trend inputs and rows
(``aggregates``), partition and retention arithmetic (``partitions``, ``retention``),
amba's InfluxDB layout (``influx_layout``), the names other processes address
(``names``), masking (``masking``) and the failure kinds an operator acts on (``failures``).
Everything here is testable without any service.
"""
