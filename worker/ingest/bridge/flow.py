"""When the bridge stops consuming and when it tries again (pure): :class:`Backpressure` on
the ingest queue, Redis's memory and the unconfirmed batches (where a store outage shows
first), with hysteresis; :class:`Backoff` between attempts at a failing Redis or dead-letter topic.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Redis's memory must fall this share of maxmemory below the watermark before a resume.
MEMORY_HYSTERESIS = 0.05


@dataclass
class Backpressure:
    high_watermark: int
    low_watermark: int
    max_in_flight: int
    memory_high: float = 1.0  # share of Redis's maxmemory; resumes MEMORY_HYSTERESIS below it
    paused: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0 <= self.low_watermark < self.high_watermark:
            raise ValueError("need 0 <= low_watermark < high_watermark")
        if self.max_in_flight < 1:
            raise ValueError("max_in_flight must be >= 1")
        if not MEMORY_HYSTERESIS < self.memory_high <= 1:
            raise ValueError(f"memory_high must be in ({MEMORY_HYSTERESIS}, 1]")

    def update(self, queue_depth: int, in_flight: int, memory_ratio: float = 0.0) -> bool:
        """True while the bridge should not consume (hysteresis on every measure)."""
        if self.paused:
            if (queue_depth <= self.low_watermark and in_flight <= self.max_in_flight // 2
                    and memory_ratio <= self.memory_high - MEMORY_HYSTERESIS):
                self.paused, self.reason = False, ""
        elif queue_depth >= self.high_watermark:
            self.paused, self.reason = True, "queue"
        elif memory_ratio >= self.memory_high:
            self.paused, self.reason = True, "redis_memory"
        elif in_flight >= self.max_in_flight:
            self.paused, self.reason = True, "in_flight"
        return self.paused


@dataclass
class Backoff:
    initial_s: float = 0.5
    maximum_s: float = 30.0
    failures: int = 0
    retry_at: float = 0.0

    def failure(self, now: float) -> float:
        delay = min(self.maximum_s, self.initial_s * (1 << min(self.failures, 16)))
        self.failures += 1
        self.retry_at = now + delay
        return delay

    def success(self) -> None:
        self.failures, self.retry_at = 0, 0.0

    def blocked(self, now: float) -> bool:
        return now < self.retry_at
