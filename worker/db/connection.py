"""Connections with the settings every product connection needs."""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import connection as Connection


def connect(dsn: str, *, application_name: str = "trend-aggregator", autocommit: bool = False) -> Connection:
    """A connection with keepalives and a short connect timeout.

    The defaults of libpq wait for minutes on a dead server; a task that holds a worker
    slot must fail fast so Celery can retry it.
    """
    conn = psycopg2.connect(
        dsn,
        application_name=application_name,
        connect_timeout=5,
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    conn.autocommit = autocommit
    return conn
