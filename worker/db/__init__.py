"""PostgreSQL access shared by the event store, the trend run state and the commands: bounded
connections (``connection``), migrations (``migrate``, ``migrations/``), partition DDL
(``partition_admin``)."""
