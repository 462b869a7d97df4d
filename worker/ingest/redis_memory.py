"""How full Redis is, and whether an error is Redis refusing a write for want of memory.

With ``maxmemory`` and ``noeviction`` a full Redis refuses only the commands that grow it;
every process must live through that state (docs/operating.md, "Redis memory").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

#: The share of maxmemory from which ``aggregator health`` fails and the RedisNearlyFull alert
#: fires (monitoring/prometheus/alerts.yml): above the bridge's watermark, so it means Redis
#: fills although the bridges hold back.
NEAR_FULL = 0.9


@dataclass(frozen=True, slots=True)
class MemoryUse:
    used: int  # bytes (INFO memory's used_memory)
    limit: int  # maxmemory; 0 = no limit

    @classmethod
    def of(cls, info: Mapping[str, Any]) -> MemoryUse:
        """From the answer of ``INFO memory``."""
        return cls(int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)))

    @classmethod
    def read(cls, client: redis.Redis) -> MemoryUse:
        return cls.of(client.info("memory"))

    @property
    def ratio(self) -> float:
        """``used / limit``; 0.0 without a limit (then only the queue depth counts)."""
        return self.used / self.limit if self.limit > 0 else 0.0

    def __str__(self) -> str:
        mib = 1024 * 1024
        if not self.limit:
            return f"{self.used / mib:.1f} MiB used, no maxmemory"
        return f"{self.used / mib:.1f} MiB of {self.limit / mib:.1f} MiB maxmemory ({self.ratio:.0%})"


def refused_for_memory(error: BaseException | None) -> bool:
    """True when ``error``, or an error it was raised from (kombu and Celery wrap Redis's),
    is Redis refusing a write at its ``maxmemory`` (an ``OutOfMemoryError``, or a MULTI that
    Redis discarded for it: an ``ExecAbortError`` that says so)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, redis.exceptions.OutOfMemoryError) or (
                isinstance(error, redis.exceptions.ResponseError) and "'maxmemory'" in str(error)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
