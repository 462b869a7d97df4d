"""A dead worker's deliveries back in seconds: per-worker unacked keys and a heartbeat.

kombu's Redis transport keeps every delivery a worker holds (acks_late: until its task
ends; an ETA retry: until it is due) in one hash, ``unacked``, and hands it out again only
when ``QoS.restore_visible`` finds it older than ``visibility_timeout`` in the one index
``unacked_index``. That sweep knows ages, not owners: it cannot tell a dead worker's batch
from a long trend chunk or a waiting retry, so the timeout stays above the longest of them
(``VISIBILITY_TIMEOUT_S``, 2 h) and a SIGKILLed worker's batches were invisible that long.

So each worker process gets keys of its own (kombu's transport options ``unacked_key``,
``unacked_index_key``, ``unacked_mutex_key``, set at ``celeryd_init`` before the consumer
connects) and announces itself: a heartbeat key with a TTL of ``WORKER_HEARTBEAT_TTL_S``,
and its id in the set :data:`REGISTRY`. A thread refreshes the heartbeat every fifth of the
TTL with ``PEXPIRE``, which needs no memory (it works while a full Redis refuses writes),
and sweeps: a registered worker whose heartbeat is gone is dead, and its deliveries go back
to the head of their queues through kombu's own ``restore_by_tag`` (one transaction per
delivery, so two sweepers never restore one twice, and a full Redis that refuses the push
leaves the delivery where it was).

A worker judges the others only once its own heartbeat has held for a full TTL: if Redis
stalled (frozen, its clock jumped) every heartbeat lapses at once, every worker finds its
own gone, announces itself again and waits a TTL, so live workers are not taken for dead
en masse. One taken for dead all the same (its beat lapsed) has its batches run twice,
which the idempotent store absorbs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery.signals import celeryd_init, worker_ready

from worker.celeryapp.resources import redis_client
from worker.config.settings import get_settings

log = logging.getLogger(__name__)

REGISTRY = "aggregator:workers"


def heartbeat_key(worker_id: str) -> str:
    return f"aggregator:worker:{worker_id}"


def transport_keys(worker_id: str) -> dict[str, str]:
    """kombu's transport options that give a worker its own unacked keys."""
    return {"unacked_key": f"unacked:{worker_id}", "unacked_index_key": f"unacked_index:{worker_id}",
            "unacked_mutex_key": f"unacked_mutex:{worker_id}"}


def registered(client: Any) -> list[str]:
    """The ids of the workers that announced themselves (and were not found dead yet)."""
    return sorted(member.decode() for member in client.smembers(REGISTRY))


def unacked_keys(client: Any) -> list[str]:
    """The unacked hashes of every registered worker (health and metrics sum their lengths)."""
    return [transport_keys(worker_id)["unacked_key"] for worker_id in registered(client)]


def restore_deliveries(app: Any, worker_id: str) -> int:
    """Put every delivery ``worker_id`` held back in its queue; returns how many are left."""
    from kombu.transport.redis import QoS

    keys = transport_keys(worker_id)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos: Any = QoS(channel)
        qos.unacked_key, qos.unacked_index_key = keys["unacked_key"], keys["unacked_index_key"]
        client = channel.client
        for tag in client.hkeys(keys["unacked_key"]):
            qos.restore_by_tag(tag, client)
        return int(client.hlen(keys["unacked_key"]))


class Liveness:
    """One worker process's heartbeat, and its sweep of the dead ones' deliveries."""

    def __init__(self, client: redis.Redis, worker_id: str, ttl_s: float, restore: Callable[[str], int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.client, self.worker_id, self.ttl_s, self.restore, self.clock = client, worker_id, ttl_s, restore, clock
        self.trusted_from: float | None = None  # since when our heartbeat held without a lapse

    def beat(self) -> None:
        """Refresh the heartbeat; announce it again when it lapsed (or was never written)."""
        key, ttl_ms = heartbeat_key(self.worker_id), int(self.ttl_s * 1000)
        try:
            held = bool(self.client.pexpire(key, ttl_ms))
            if not held:
                self.client.set(key, b"", px=ttl_ms)
                self.client.sadd(REGISTRY, self.worker_id)
        except redis.RedisError:
            self.trusted_from = None
            raise
        if not held or self.trusted_from is None:
            self.trusted_from = self.clock()

    def sweep(self) -> list[str]:
        """Restore the deliveries of registered workers whose heartbeat is gone; their ids."""
        if self.trusted_from is None or self.clock() - self.trusted_from < self.ttl_s:
            return []
        others = [other for other in registered(self.client) if other != self.worker_id]
        dead = [other for other in others if not self.client.exists(heartbeat_key(other))]
        for other in dead:
            left = self.restore(other)
            log.warning("restored the deliveries of a dead worker", extra={"worker_id": other, "left": left})
            if left == 0:
                self.client.delete(*transport_keys(other).values())
                self.client.srem(REGISTRY, other)
        return dead

    def run(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 5):
            try:
                self.beat()
                self.sweep()
            except Exception as error:  # Redis away or full: try again at the next tick
                log.warning("worker heartbeat or sweep failed", extra={"error": str(error)[:300]})


_liveness: Liveness | None = None


@celeryd_init.connect
def _own_keys(sender: Any = None, instance: Any = None, conf: Any = None, **_: Any) -> None:
    """Give this worker its unacked keys and announce it, before its consumer connects."""
    global _liveness
    app = instance.app
    worker_id = f"{sender or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    conf.broker_transport_options = {**conf.broker_transport_options, **transport_keys(worker_id)}
    settings = get_settings()
    _liveness = Liveness(redis_client(settings), worker_id, settings.worker_heartbeat_ttl_s,
                         lambda other: restore_deliveries(app, other))
    try:
        _liveness.beat()
    except redis.RedisError as error:
        log.warning("worker heartbeat not written yet; retried by its thread", extra={"error": str(error)[:300]})


@worker_ready.connect
def _start_heartbeat(**_: Any) -> None:
    """Beat and sweep from a thread of the main process (after the pool forked)."""
    if _liveness is not None:
        threading.Thread(target=_liveness.run, args=(threading.Event(),), name="heartbeat", daemon=True).start()
