"""A run's identity and shape, pure: its time, its id, its lease token and its chunks
(:mod:`worker.trends.lifecycle` carries the run out)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.core import alignment


@dataclass
class Plan:
    run_id: str
    duration: str  # the duration's name (a plan travels through Celery as text)
    now_ns: int
    chunks: list[list[str]]

    @property
    def dois(self) -> int:
        return sum(len(c) for c in self.chunks)


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def datetime_to_ns(at: datetime) -> int:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def run_time_ns(at: str | datetime | None = None) -> int:
    """A run's ``now``: ``at`` (ISO 8601 text or a datetime, UTC when it has no offset) or the
    current time, floored to a whole second, the resolution every store computes trends at
    (:mod:`worker.core.alignment`)."""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at or datetime.now(UTC)
    return alignment.whole_second_ns(datetime_to_ns(moment))


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def new_run_id(duration: str, now_ns: int, token: str) -> str:
    return f"{duration}:{ns_to_datetime(now_ns):%Y%m%dT%H%M%S}Z:{token[:8]}"


def new_token(holder: str | None = None) -> str:
    """A run's lease token: random, and naming the worker node that holds it (``<hex>.<node>``)
    so a restarted worker can recognise the leases of its dead incarnation."""
    token = uuid.uuid4().hex
    return f"{token}.{holder}" if holder else token


def token_holder(token: str) -> str | None:
    """The worker node a lease token names (:func:`new_token`), or None."""
    _, dot, holder = token.partition(".")
    return holder if dot else None
