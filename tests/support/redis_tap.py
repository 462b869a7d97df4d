"""A thread that pops a Redis list as items arrive and hands each to a callback, with the
time it was popped: tests that must know *when* something reached Redis (a beat's fire, an
ingest task's confirmation) without polling."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis


class RedisListTap:
    """Pops ``key`` (blocking, so the time is the arrival's) until :meth:`close`."""

    def __init__(self, url: str, key: str, on_item: Callable[[bytes, float], None], *, right: bool = False) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.key = key
        self._on_item = on_item
        self._pop = self.client.brpop if right else self.client.blpop
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            item = self._pop([self.key], timeout=1)
            if item is not None:
                value = item[1]
                self._on_item(value if isinstance(value, bytes) else str(value).encode(), time.monotonic())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.close()
