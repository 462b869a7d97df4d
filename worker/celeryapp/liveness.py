"""A dead worker's deliveries back in seconds: per-worker unacked keys and a heartbeat
(``WORKER_HEARTBEAT_TTL_S``); a registered worker whose heartbeat is gone has its deliveries
restored with kombu's ``restore_by_tag``, and the messages it was popping moved back
(worker/celeryapp/inflight.py). docs/guarantees.md ("A dead worker's batches are back within
seconds") says why kombu's age-based sweep cannot do this.
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

from worker.celeryapp.inflight import TRANSPORT, inflight_prefix, restore_inflight
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
    """The ids of the workers that announced themselves and were not found dead yet."""
    return sorted(member.decode() for member in client.smembers(REGISTRY))


def unacked_keys(client: Any) -> list[str]:
    """The unacked hashes of every registered worker (health and metrics sum their lengths)."""
    return [transport_keys(worker_id)["unacked_key"] for worker_id in registered(client)]


def restore_deliveries(app: Any, worker_id: str) -> int:
    """Put every delivery ``worker_id`` held, or was popping, back in its queue; returns how many are left."""
    from kombu.transport.redis import QoS

    keys = transport_keys(worker_id)
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        qos: Any = QoS(channel)
        qos.unacked_key, qos.unacked_index_key = keys["unacked_key"], keys["unacked_index_key"]
        client = channel.client
        for tag in client.hkeys(keys["unacked_key"]):
            qos.restore_by_tag(tag, client)
        return int(client.hlen(keys["unacked_key"])) + restore_inflight(client, worker_id)


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
        """Restore the deliveries of registered workers whose heartbeat is gone; their ids.
        Only once our own heartbeat held a full TTL: a stalled Redis expires every heartbeat."""
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
    """Give this worker its unacked keys and in-flight lists and announce it, before its consumer connects."""
    global _liveness
    app = instance.app
    worker_id = f"{sender or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    conf.broker_transport_options = {**conf.broker_transport_options, **transport_keys(worker_id),
                                     "inflight_prefix": inflight_prefix(worker_id)}
    conf.broker_transport = TRANSPORT  # workers only: Flower reads the transport's name as a URL scheme
    settings = get_settings()
    _liveness = Liveness(redis_client(settings), worker_id, settings.worker_heartbeat_ttl_s,
                         lambda other: restore_deliveries(app, other))
    try:
        _liveness.beat()
    except redis.RedisError as error:
        log.warning("worker heartbeat not written yet; retried by its thread", extra={"error": str(error)[:300]})


@worker_ready.connect
def _start_heartbeat(**_: Any) -> None:
    """Beat and sweep from a thread of the main process, after the pool forked."""
    if _liveness is not None:
        threading.Thread(target=_liveness.run, args=(threading.Event(),), name="heartbeat", daemon=True).start()
