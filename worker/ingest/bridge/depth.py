"""Depth of a kombu queue on Redis, for the bridge's backpressure: one cached pipeline reads
the queue's length (one list: celeryconfig.py's ``priority_steps``), Redis's memory and whether
the exchange binding exists (kombu drops a message without it, kombu#1063). An error reads as
"too deep": pausing is safe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from worker.ingest.redis_memory import MemoryUse

log = logging.getLogger(__name__)

UNKNOWN_DEPTH = 2**62


@dataclass
class DepthReading:
    depth: int  # UNKNOWN_DEPTH when Redis did not answer
    binding_ok: bool
    memory_ratio: float = 0.0  # used / maxmemory; 0.0 without a limit or an answer


class QueueDepthProbe:
    def __init__(self, client: redis.Redis, queue: str, exchange: str | None = None,
                 interval_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._queue = queue
        self._binding_key = f"_kombu.binding.{exchange or queue}"
        self._interval_s = interval_s
        self._clock = clock
        self._last: DepthReading | None = None
        self._read_at = float("-inf")

    def read(self) -> DepthReading:
        now = self._clock()
        if self._last is not None and now - self._read_at < self._interval_s:
            return self._last
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.llen(self._queue)
            pipe.exists(self._binding_key)
            pipe.info("memory")
            length, binding, memory = pipe.execute()
            reading = DepthReading(int(length), bool(binding), MemoryUse.of(memory).ratio)
        except redis.RedisError as error:
            log.warning("queue depth unknown, treating as too deep", extra={"error": str(error)})
            reading = DepthReading(UNKNOWN_DEPTH, True)
        self._last, self._read_at = reading, now
        return reading

    def note_published(self) -> None:
        """Count our own publish into the cached depth: a burst cannot overshoot between reads."""
        if self._last is not None and self._last.depth != UNKNOWN_DEPTH:
            self._last = DepthReading(self._last.depth + 1, self._last.binding_ok, self._last.memory_ratio)

    def invalidate(self) -> None:
        self._last = None
