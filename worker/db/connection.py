"""Connections with the settings every product connection needs."""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import connection as Connection

from worker.settings import get_settings

__all__ = ["Connection", "connect"]


def connect(dsn: str, *, application_name: str = "trend-aggregator", autocommit: bool = False,
            timeout_s: float | None = None) -> Connection:
    """A connection with keepalives and a bounded connect time (``CONNECT_TIMEOUT_S``).

    libpq's defaults wait for minutes on a dead server, and for ever on one that accepts
    TCP and never answers; a task that holds a worker slot must fail fast so Celery can
    retry it, and a command must end with a message. libpq counts the timeout in whole
    seconds, at least 2.
    """
    timeout = get_settings().connect_timeout_s if timeout_s is None else timeout_s
    conn = psycopg2.connect(
        dsn,
        application_name=application_name,
        connect_timeout=max(2, round(timeout)),
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    conn.autocommit = autocommit
    return conn
