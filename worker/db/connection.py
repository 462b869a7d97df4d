"""Connections with the settings every product connection needs."""

from __future__ import annotations

import contextlib
import os
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg2
from psycopg2.extensions import TRANSACTION_STATUS_ACTIVE, make_dsn, parse_dsn
from psycopg2.extensions import connection as Connection
from psycopg2.extensions import cursor as Cursor

from worker.config.settings import Settings
from worker.core.masking import mask_dsn

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT_S",
    "NO_TIMEOUTS",
    "Connection",
    "Cursor",
    "Database",
    "ReusedConnection",
    "Timeouts",
    "connect",
    "sever_all",
    "with_password",
]

#: ``CONNECT_TIMEOUT_S``'s default; the product's callers pass the setting's value.
DEFAULT_CONNECT_TIMEOUT_S = 10.0

T = TypeVar("T")

#: Every connection :func:`connect` opened and not yet collected, with the process that opened
#: it (a forked child inherits the set, never the right to shut its parent's sockets).
_OPENED: weakref.WeakKeyDictionary[Connection, int] = weakref.WeakKeyDictionary()
#: The connections :func:`sever_all` shut: their server stopped answering.
_SEVERED: weakref.WeakSet[Connection] = weakref.WeakSet()


def connect(dsn: str, *, application_name: str = "trend-aggregator", autocommit: bool = False,
            timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> Connection:
    """A connection with keepalives and a bounded connect time (``CONNECT_TIMEOUT_S``, whole
    seconds, at least 2 for libpq): libpq's defaults wait for ever on a server that accepts
    TCP and never answers, and a task holding a worker slot must fail fast so Celery retries it.
    """
    conn = psycopg2.connect(
        dsn,
        application_name=application_name,
        connect_timeout=max(2, round(timeout_s)),
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
        # Sent data unacknowledged this long (a paused VM, a partition): the connection is dead.
        tcp_user_timeout=60_000,
    )
    conn.autocommit = autocommit
    _OPENED[conn] = os.getpid()
    return conn


def sever_all() -> int:
    """Shut the socket of every connection of this process inside a statement; how many.

    The one way to end a statement on a PostgreSQL that does not answer at all (a frozen
    VM still answers keepalives): libpq resumes its wait after a signal, and
    ``statement_timeout`` is the server's. The statement then raises ``OperationalError``.
    Idle connections are left alone. Called from :mod:`worker.celeryapp.stalls`'s timer thread.
    """
    severed = 0
    for conn, pid in list(_OPENED.items()):
        if conn.closed or pid != os.getpid() or conn.info.transaction_status != TRANSACTION_STATUS_ACTIVE:
            continue
        _SEVERED.add(conn)  # first: the thread waiting on it wakes at the shutdown and asks
        try:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, psycopg2.Error):
            _SEVERED.discard(conn)
            continue
        severed += 1
    return severed


def with_password(dsn: str, password: str) -> str:
    """``dsn`` (a URL or libpq keywords) with ``password`` in it; a URL stays a URL, so the
    masked DSN in messages reads as the operator wrote it. A DSN with a password is refused."""
    if parse_dsn(dsn).get("password") is not None:
        raise ValueError("POSTGRES_DSN holds a password and POSTGRES_PASSWORD is set too: keep one")
    parts = urlsplit(dsn)
    user, _, host = parts.netloc.rpartition("@")
    if "://" not in dsn or not user:
        # Keywords, or a URL for libpq's default user (the OS user), which cannot carry a password.
        return make_dsn(dsn, password=password)
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


@dataclass(frozen=True)
class Timeouts:
    """``statement_timeout`` and ``lock_timeout`` of one kind of session (0 = none), set per
    transaction (``SET LOCAL``) so one kept connection serves several kinds. A cancelled
    statement raises an ``OperationalError``: the caller's "PostgreSQL did not answer" path.
    """

    statement_s: float = 0.0
    lock_s: float = 0.0

    def sql(self, *, local: bool = True) -> str:
        scope = "SET LOCAL" if local else "SET"
        return (f"{scope} statement_timeout = {round(self.statement_s * 1000)}; "
                f"{scope} lock_timeout = {round(self.lock_s * 1000)}")


#: No statement or lock timeout: what a session has unless its kind sets one.
NO_TIMEOUTS = Timeouts()


@dataclass(frozen=True)
class Database:
    """Where the product's PostgreSQL is and how long to wait for it: the one place the DSN
    secret is read from the settings (:meth:`from_settings`); its ``repr`` masks the password."""

    dsn: str = field(repr=False)
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        dsn = settings.postgres_dsn.get_secret_value()
        if settings.postgres_password is not None:
            dsn = with_password(dsn, settings.postgres_password.get_secret_value())
        return cls(dsn, settings.connect_timeout_s)

    def connect(self, *, application_name: str = "trend-aggregator", autocommit: bool = False) -> Connection:
        return connect(self.dsn, application_name=application_name, autocommit=autocommit,
                       timeout_s=self.connect_timeout_s)

    def __repr__(self) -> str:
        return f"Database({mask_dsn(self.dsn)!r}, connect_timeout_s={self.connect_timeout_s})"


class ReusedConnection:
    """One open connection per DSN and process, for many short transactions in a row.

    A connection per chunk of a trend run cost 0.6 s of a ``year`` run (``bench/year_scale.py``).
    The key holds the process id: a connection never crosses a fork. A block that finds the
    kept connection dead is run once more on a new one, so it must be safe to run twice; not
    when :func:`sever_all` shut it: that server stopped answering, and a new connection would
    wait on it past the task's hard time limit.
    """

    def __init__(self, application_name: str, *, timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S) -> None:
        self._application_name = application_name
        self._timeout_s = timeout_s
        self._connections: dict[tuple[int, str], Connection] = {}

    def run(self, dsn: str, work: Callable[[Cursor], T]) -> T:
        """``work(cursor)`` in one transaction (committed on return, rolled back on error)."""
        key = (os.getpid(), dsn)
        for attempt in (1, 2):
            conn = self._connections.get(key)
            fresh = conn is None or bool(conn.closed)
            if conn is None or conn.closed:
                conn = connect(dsn, application_name=self._application_name, timeout_s=self._timeout_s)
                self._connections[key] = conn
            try:
                with conn, conn.cursor() as cur:
                    return work(cur)
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                if not conn.closed:  # the statement failed, the connection is fine (a lock timeout…)
                    raise
                self._connections.pop(key, None)  # the connection broke: never reuse it
                if fresh or attempt == 2 or conn in _SEVERED:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        for conn in self._connections.values():
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._connections.clear()
