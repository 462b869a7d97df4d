"""Versioned schema migrations (yoyo-migrations), applied by `aggregator setup`; yoyo's lock
keeps two containers starting at once from applying a migration twice."""

from __future__ import annotations

import logging
from importlib import resources
from urllib.parse import quote, urlencode

from psycopg2.extensions import parse_dsn
from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)


def yoyo_uri(dsn: str, connect_timeout_s: float) -> str:
    """The DSN (URL or libpq keywords) as the URL yoyo wants, with a ``connect_timeout`` query
    argument (yoyo hands it to psycopg2): without one a server that never answers hangs setup."""
    params = dict(parse_dsn(dsn))
    user, password = params.pop("user", None), params.pop("password", None)
    host, port, dbname = params.pop("host", None), params.pop("port", None), params.pop("dbname", "")
    if host and host.startswith("/"):  # a Unix socket directory is no URL host
        params["host"], host = host, None
    credentials = ""
    if user is not None:
        credentials = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "") + "@"
    netloc = credentials + (f"[{host}]" if host and ":" in host else host or "") + (f":{port}" if port else "")
    params.setdefault("connect_timeout", str(max(2, round(connect_timeout_s))))
    return f"postgresql://{netloc}/{dbname}?{urlencode(params)}"


def migrate(dsn: str, *, connect_timeout_s: float = 10.0) -> list[str]:
    """Apply pending migrations; return the ids applied (empty when up to date)."""
    migrations = read_migrations(str(resources.files("worker.db") / "migrations"))
    backend = get_backend(yoyo_uri(dsn, connect_timeout_s))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        applied = [m.id for m in pending]
    finally:
        backend.connection.close()
    log.info("migrations applied=%s", ",".join(applied) or "none")
    return applied
