"""One write limit for the event store shared by every ingest worker (Celery's ``rate_limit``
is per worker): :func:`worker.core.token_bucket.take` as a Lua script on Redis's clock (hosts
may disagree); each process limits itself while Redis does not answer (docs/operating.md,
"Scaling the ingest rate").
"""

from __future__ import annotations

import logging
import time

import redis

from worker.core.token_bucket import Bucket, capacity_units, idle_expiry_ms, take

log = logging.getLogger(__name__)

#: KEYS[1] the bucket (a hash: t = micro-tokens, at = microseconds); ARGV: rate (tokens/s),
#: capacity in micro-tokens, expiry (ms). Returns {granted 1/0, wait in microseconds}.
TAKE_SCRIPT = """
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 't', 'at')
local tokens, at
if state[1] == false or state[2] == false then
    tokens, at = cap, now
else
    local last = tonumber(state[2])
    tokens = math.min(cap, tonumber(state[1]) + math.floor(math.max(0, now - last) * rate))
    at = math.max(now, last)
end
local wait = 0
if tokens >= 1000000 then
    tokens = tokens - 1000000
else
    wait = math.ceil((1000000 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', string.format('%.0f', tokens), 'at', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if wait == 0 then return {1, 0} end
return {0, wait}
"""


def bucket_key(queue: str) -> str:
    return f"aggregator:ingest:write-limit:{queue}"


class WriteLimit:
    """The shared bucket of the ingest writes, on one Redis client (built by the caller)."""

    def __init__(self, client: redis.Redis, key: str, rate: float, capacity: float) -> None:
        self._client = client
        self.key = key
        self.rate = rate
        self.capacity = capacity
        self._script = client.register_script(TAKE_SCRIPT)
        self._expiry_ms = idle_expiry_ms(rate, capacity)
        self._cap_units = capacity_units(capacity)
        self._local: Bucket | None = None  # the fallback bucket while Redis does not answer
        self._falling_back = False  # logged once per outage, not per take

    def take(self) -> float:
        """Take a token: 0.0 when granted, else the seconds to wait for one."""
        try:
            granted, wait_us = self._script(keys=[self.key], args=[repr(self.rate), self._cap_units, self._expiry_ms])
        except (redis.RedisError, OSError) as error:
            if not self._falling_back:
                self._falling_back = True
                log.warning("write limit: Redis did not answer; this process limits itself to the rate alone",
                            extra={"key": self.key, "error": str(error)[:200]})
            result = take(self._local, time.monotonic_ns() // 1000, self.rate, self.capacity)
            self._local = result.state
            return result.wait_us / 1e6
        if self._falling_back:
            self._falling_back = False
            log.info("write limit: Redis answers again; the shared bucket applies", extra={"key": self.key})
        return 0.0 if int(granted) else int(wait_us) / 1e6

    def acquire(self, max_wait_s: float) -> float:
        """Wait for a token for at most ``max_wait_s``: 0.0 once taken, else the seconds still
        to wait (the caller retries the task with that countdown instead of holding a slot)."""
        waited = 0.0
        while True:
            wait = self.take()
            if wait == 0.0:
                return 0.0
            if waited + wait > max_wait_s:
                return wait
            time.sleep(wait)
            waited += wait

    def close(self) -> None:
        self._client.close()
