"""Per-process resources of a worker: created lazily, after Celery's fork.

A database connection or a Kafka producer created before the prefork pool forks would be
shared by the children and corrupted; creating them on first use inside the child avoids
that, and a failed connection is simply reopened on the next task.
"""

from __future__ import annotations

import contextlib
from functools import lru_cache

import redis

from worker.deadletter import DeadLetterWriter
from worker.settings import get_settings
from worker.store import EventStore, open_store


@lru_cache(maxsize=1)
def event_store() -> EventStore:
    return open_store(get_settings())


@lru_cache(maxsize=1)
def dead_letters() -> DeadLetterWriter:
    settings = get_settings()
    return DeadLetterWriter(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic)


@lru_cache(maxsize=1)
def ack_client() -> redis.Redis:
    """Redis for the confirmations to the bridge (short timeouts: a confirmation that does
    not go through only costs a duplicate write, it must never hold a worker slot)."""
    settings = get_settings()
    timeout = min(settings.connect_timeout_s, 2.0)
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=timeout,
                                socket_connect_timeout=timeout)


def reset() -> None:
    """Forget the cached resources (tests switch settings between cases)."""
    for cached in (event_store, dead_letters, ack_client):
        if cached.cache_info().currsize:
            with contextlib.suppress(Exception):  # closing a broken resource is best effort
                cached().close()
        cached.cache_clear()
