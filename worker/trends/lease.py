"""One run of a duration in flight at a time: a lease in Redis, renewed by every chunk and
the finalize (docs/trends.md, "A killed trends worker").

Released when the *chord* is over, not when the launching task returns (as celery-once
would, before the chunks ran); the token travels through the chord (redis-py's Lock keeps
it per thread), and release and renewal are compare-and-set, so a run whose lease expired
can never release or extend the next run's.
"""

from __future__ import annotations

import redis

# Compare-and-set: with a TTL (ARGV[2]) it renews, without one it releases.
_IF_HELD = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return redis.call('del', KEYS[1])
"""


class RunLock:
    def __init__(self, client: redis.Redis, duration: str, ttl_s: int) -> None:
        self._client = client
        self.key = f"aggregator:trend-run:{duration}"
        self._ttl_ms = ttl_s * 1000

    def acquire(self, token: str) -> bool:
        return bool(self._client.set(self.key, token, nx=True, px=self._ttl_ms))

    def renew(self, token: str) -> bool:
        """Extend the lease by the full TTL; False when it is no longer ours."""
        return bool(self._client.eval(_IF_HELD, 1, self.key, token, str(self._ttl_ms)))

    def release(self, token: str) -> bool:
        return bool(self._client.eval(_IF_HELD, 1, self.key, token))

    def holder(self) -> str | None:
        value = self._client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value


class Leases:
    """The lease of each duration, on one Redis client (built from settings by the caller)."""

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self.ttl_s = ttl_s

    def of(self, duration: str) -> RunLock:
        return RunLock(self._client, duration, self.ttl_s)

    def close(self) -> None:
        self._client.close()
