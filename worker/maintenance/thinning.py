"""Which history rows a thinned day keeps: per (DOI, duration) and hour or day (UTC), the
row with the latest ``calculated_at``. :func:`kept_rows` is the SQL run inside
:func:`worker.db.partition_admin.swap_thinned`; :func:`thin`, the same rule in memory, is
what the tests compare the database with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TypeVar

from psycopg2 import sql

from worker.core.retention import Level

Key = tuple[str, str, datetime]  # (publication_doi, duration, calculated_at)
K = TypeVar("K", bound=Key)


def kept_rows(level: Level) -> Callable[[sql.Identifier], sql.Composable]:
    """A ``SELECT`` over a history partition that returns the rows ``level`` keeps."""
    bucket = sql.SQL("date_trunc({}, calculated_at, 'UTC')").format(sql.Literal(level.bucket))

    def select(source: sql.Identifier) -> sql.Composable:
        return sql.SQL("SELECT DISTINCT ON (publication_doi, duration, {bucket}) * FROM {source} "
                       "ORDER BY publication_doi, duration, {bucket}, calculated_at DESC").format(
            bucket=bucket, source=source)

    return select


def bucket_of(at: datetime, level: Level) -> datetime:
    """The UTC hour or day ``at`` falls in."""
    at = at.astimezone(UTC)
    if level is Level.HOURLY:
        return at.replace(minute=0, second=0, microsecond=0)
    if level is Level.DAILY:
        return at.replace(hour=0, minute=0, second=0, microsecond=0)
    return at


def thin(rows: Iterable[K], level: Level) -> set[K]:
    """The rows (keys) a day thinned to ``level`` keeps; every row at ``Level.FULL``."""
    if level is Level.FULL:
        return set(rows)
    latest: dict[tuple[str, str, datetime], K] = {}
    for row in rows:
        doi, duration, at = row[0], row[1], row[2]
        key = (doi, duration, bucket_of(at, level))
        if key not in latest or at > latest[key][2]:
            latest[key] = row
    return set(latest.values())
