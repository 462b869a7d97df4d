"""One maintenance run per scheduled tick, however many times the tick is fired.

Beat is exactly one scheduler (worker/celeryapp/beat.py), but a tick can still arrive twice:
two beats for the moments a takeover overlaps with a paused one, an operator's second
deployment on the same Redis. The trend runs have their lease and the morning post its daily
claim; this is the maintenance task's guard. The task names its *slot* (the cron's last tick
at or before the time it starts, :func:`worker.core.cron.latest_tick`) and claims it in Redis
with ``SET NX``: the first fire of a tick runs, every other fire of it finds the claim and
does nothing. The claim expires after two periods, so the keys do not pile up.

Redis, not PostgreSQL: the tick arrives through Redis (the broker) anyway, and a claim Redis
forgets only costs a second run of an idempotent maintenance (each run computes its plan
afresh, and the advisory lock of :mod:`worker.maintenance.run` keeps two from overlapping).
``aggregator maintain`` is an operator's deliberate run and claims nothing.
"""

from __future__ import annotations

from datetime import datetime

import redis


def slot_key(slot: datetime) -> str:
    return f"aggregator:maintenance:slot:{slot.isoformat()}"


class SlotClaims:
    """Claims of maintenance slots on one Redis client (built from settings by the caller)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self.ttl_s = ttl_s

    def claim(self, slot: datetime, holder: str) -> bool:
        """True for the first claim of ``slot``; False when a fire of it already ran."""
        return bool(self._client.set(slot_key(slot), holder, nx=True, ex=self.ttl_s))

    def holder(self, slot: datetime) -> str | None:
        value = self._client.get(slot_key(slot))
        return value.decode() if isinstance(value, bytes) else value

    def close(self) -> None:
        self._client.close()
