"""The PostgreSQL store's connections: kept per process and slot, reopened after a failure.

Slot 0 serves writes and every query; slots 1.. serve only the extra parts of a chunk's
trend query, each from a thread of its own (:meth:`Sessions._copy_out_parts`).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection

from worker.db.connection import Cursor, connect
from worker.store.base import StoreUnavailable


class Sessions:
    """The connections of one store; a failed one is dropped and the caller told to retry."""

    def __init__(self, dsn: str, *, slots: int, connect_timeout_s: float, query_settings: str) -> None:
        if slots < 1:
            raise ValueError("query_connections must be >= 1")
        self._dsn = dsn
        self._timeout_s = connect_timeout_s
        self._query_settings = query_settings
        self._conns: list[Connection | None] = [None] * slots
        self._pool: ThreadPoolExecutor | None = None

    @property
    def query_connections(self) -> int:
        return len(self._conns)

    def _connection(self, slot: int = 0) -> Connection:
        conn = self._conns[slot]
        if conn is None or conn.closed:
            try:
                conn = self._conns[slot] = connect(self._dsn, application_name="aggregator-store",
                                                   timeout_s=self._timeout_s)
            except psycopg2.OperationalError as error:
                raise StoreUnavailable(f"PostgreSQL unreachable: {error}".strip()) from error
        return conn

    def _drop_connection(self, slot: int = 0) -> None:
        conn = self._conns[slot]
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._conns[slot] = None

    @contextlib.contextmanager
    def _transaction(self, slot: int = 0) -> Iterator[Cursor]:
        """A cursor in a transaction on ``slot``'s connection, dropped when the connection fails."""
        conn = self._connection(slot)
        try:
            with conn, conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            self._drop_connection(slot)
            raise StoreUnavailable(f"PostgreSQL query failed: {error}".strip()) from error

    def _query(self, sql: str, params: tuple[object, ...] | dict[str, object]) -> list[tuple[Any, ...]]:
        with self._transaction() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def _copy_out(self, sql: str, params: dict[str, object], slot: int = 0) -> bytes:
        """The output of ``COPY (…) TO STDOUT`` on the connection of ``slot`` (COPY takes no
        bind parameters: psycopg2 quotes the values, as ``execute`` does)."""
        out = io.BytesIO()
        with self._transaction(slot) as cur:
            cur.execute(self._query_settings)
            cur.copy_expert(cur.mogrify(sql, params).decode(), out)
        return out.getvalue()

    def _copy_out_parts(self, sql: str, params: Sequence[dict[str, object]]) -> list[bytes]:
        """:meth:`_copy_out` of each part at once, part ``p`` on slot ``p``, part 0 in this thread.

        Threads suffice: psycopg2 waits in libpq without the GIL, the work is in the
        backends. Every part ends before this returns (no connection is left mid-query);
        the first failure in part order is raised. Each part is its own transaction, as
        each chunk always was.
        """
        if len(params) == 1:
            return [self._copy_out(sql, params[0])]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(len(self._conns) - 1, thread_name_prefix="trend-query")
        futures = [self._pool.submit(self._copy_out, sql, part, slot) for slot, part in enumerate(params[1:], 1)]
        try:
            first = self._copy_out(sql, params[0])
        finally:
            wait(futures)
        return [first, *(future.result() for future in futures)]

    def close(self) -> None:
        for slot in range(len(self._conns)):
            self._drop_connection(slot)
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
