"""The overlap guard: one run of a duration in flight at a time.

The lock is taken by the run task and released by the chord callback or its errback,
i.e. when the *chord* is over — libraries like celery-once release when the launching task
returns, which is before the chunks even ran. The token is passed explicitly through the
chord (redis-py's Lock keeps it per thread), and release is compare-and-delete, so a run
whose lock expired can never release the lock of the run after it.
"""

from __future__ import annotations

import redis

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def lock_key(duration: str) -> str:
    return f"aggregator:trend-run:{duration}"


class RunLock:
    def __init__(self, client: redis.Redis, duration: str, ttl_s: int) -> None:
        self._client = client
        self.key = lock_key(duration)
        self._ttl_ms = ttl_s * 1000

    def acquire(self, token: str) -> bool:
        return bool(self._client.set(self.key, token, nx=True, px=self._ttl_ms))

    def release(self, token: str) -> bool:
        return bool(self._client.eval(_RELEASE, 1, self.key, token))

    def holder(self) -> str | None:
        value = self._client.get(self.key)
        return value.decode() if isinstance(value, bytes) else value
