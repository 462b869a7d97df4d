"""Beat's scheduler: celery-redbeat's, kept alive while Redis does not answer or is full.

redbeat's tick makes unretried Redis calls (the lock's extension; the schedule's read, a
MULTI that a Redis over its ``maxmemory`` refuses) and their errors ended beat. Here such a
tick fires nothing and is tried again: an entry due meanwhile fires once Redis answers,
within its expiry. A lock lost meanwhile makes the beat a standby until it takes the lock
again, so one beat stays active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import redis
from redbeat import RedBeatScheduler

from worker.ingest.redis_memory import refused_for_memory

log = logging.getLogger(__name__)


class Scheduler(RedBeatScheduler):  # type: ignore[misc]  # redbeat ships no type information
    _standby = False  # the lock was lost: fire nothing until it is taken again
    _redis_lost = False  # said once per outage, not at every tick

    def tick(self, min: Callable[..., float] = min, **kwargs: Any) -> float:  # Celery passes min
        try:
            if self._standby:
                if not self.lock.acquire(blocking=False):
                    return float(self.max_interval)
                self._standby = False
                log.info("beat: lock taken again; firing")
            interval = float(super().tick(min=min, **kwargs))
        except redis.exceptions.LockNotOwnedError:
            self._standby = True
            log.warning("beat: lock lost (expired while Redis did not answer, or another beat holds it); "
                        "firing nothing until it is ours again")
            return 0.0  # try to take it at once
        except redis.RedisError as error:
            full = refused_for_memory(error)
            if not (full or isinstance(error, redis.ConnectionError | redis.TimeoutError)):
                raise
            if not self._redis_lost:
                self._redis_lost = True
                log.warning("beat: Redis %s; firing nothing until it answers", "is full" if full else
                            "does not answer", extra={"error": str(error)[:200]})
            return float(self.max_interval)
        if self._redis_lost:
            self._redis_lost = False
            log.info("beat: Redis answers again")
        return interval
