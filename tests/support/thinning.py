"""The history thinning rule in memory: the model the tests compare the database with
(the product's rule is the SQL of :func:`worker.maintenance.thinning.kept_rows`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TypeVar

from worker.core.retention import Level

Key = tuple[str, str, datetime]  # (publication_doi, duration, calculated_at)
K = TypeVar("K", bound=Key)


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
