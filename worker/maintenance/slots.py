"""One maintenance run per scheduled tick, however many times the tick is fired.

A tick can arrive twice (overlapping beats during a takeover, a second deployment on the
same Redis): the task claims its slot, the cron's latest tick
(:func:`worker.core.cron.latest_tick`), with ``SET NX`` and an expiry of two periods. A
claim Redis forgets costs only a second run of an idempotent maintenance.
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
