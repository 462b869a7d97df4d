"""The kept connection of a process (``ReusedConnection``) against real PostgreSQL: a block
that found it dead runs once more on a new one, but not after the stall timer shut it
(``sever_all``): that server stopped answering, and a new connection would wait on it past
the task's hard time limit (tests/trends/test_postgres_frozen.py is the whole fault)."""

from __future__ import annotations

import threading

import psycopg2
import pytest

from tests.support.devstack.services import wait_until
from worker.db.connection import Cursor, ReusedConnection, sever_all

pytestmark = pytest.mark.integration

APPLICATION = "test-reused-connection"


def _sleeping(dsn: str) -> bool:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
                    "AND state = 'active' AND query LIKE 'SELECT pg_sleep%%'", (APPLICATION,))
        (active,) = cur.fetchone() or (0,)
    conn.close()
    return bool(active)


def test_a_block_whose_connection_was_severed_is_not_run_again(pg_dsn: str) -> None:
    kept = ReusedConnection(APPLICATION)
    calls = []

    def block(cur: Cursor) -> int:
        calls.append(1)
        if len(calls) == 2:  # the connection is in use already: this is the waiting statement
            cur.execute("SELECT pg_sleep(20)")
        return len(calls)

    try:
        assert kept.run(pg_dsn, block) == 1  # the connection is kept, and no longer new
        def sever_when_waiting() -> None:
            wait_until(lambda: _sleeping(pg_dsn), 30, "the statement")
            sever_all()

        severing = threading.Thread(target=sever_when_waiting)
        severing.start()
        with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):  # the rollback finds it shut
            kept.run(pg_dsn, block)
        severing.join()
        assert len(calls) == 2, "the severed block ran again on a new connection"
        assert kept.run(pg_dsn, block) == 3  # the next block gets a new connection
    finally:
        kept.close()
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:  # the severed backend sleeps on
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                        (APPLICATION,))
        conn.close()
