"""Versioned schema migrations (yoyo-migrations), applied by `aggregator setup`.

yoyo keeps its own bookkeeping table and takes a lock, so two containers starting at once
(the one-shot setup service and a worker) cannot apply the same migration twice.
"""

from __future__ import annotations

import logging
from importlib import resources

from yoyo import get_backend, read_migrations

log = logging.getLogger(__name__)


def _yoyo_uri(dsn: str) -> str:
    # yoyo's "postgresql" scheme is its psycopg2 backend, the driver we ship.
    if dsn.startswith("postgres://"):
        return "postgresql://" + dsn[len("postgres://"):]
    return dsn


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations; return the ids applied (empty when up to date)."""
    directory = str(resources.files("worker") / "migrations")
    migrations = read_migrations(directory)
    backend = get_backend(_yoyo_uri(dsn))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        applied = [m.id for m in pending]
    finally:
        backend.connection.close()
    log.info("migrations applied=%s", ",".join(applied) or "none")
    return applied
