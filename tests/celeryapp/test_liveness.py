"""Heartbeats and the dead workers' deliveries (worker/celeryapp/liveness.py), on a real Redis.

A "worker" here is a kombu consumer with its own unacked keys, as celeryd_init gives each
worker process: it takes a message without acknowledging it, as a worker killed mid-task
leaves it. The sweep runs on a fake clock; everything else is Redis and kombu for real.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from worker.app import app
from worker.celeryapp.liveness import REGISTRY, Liveness, heartbeat_key, restore_deliveries, transport_keys

pytestmark = pytest.mark.integration

TTL_S = 10.0
QUEUE = Queue("ingest", Exchange("ingest"), routing_key="ingest")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def hold_a_delivery(redis_url: str, worker_id: str, body: str) -> None:
    """Publish ``body`` and take it as ``worker_id`` without acknowledging it, then "die":
    the process forgets the delivery without restoring it, as SIGKILL leaves it."""
    with Connection(redis_url) as producer:
        producer.Producer().publish(body, exchange=QUEUE.exchange, routing_key="ingest", declare=[QUEUE])
    with Connection(redis_url, transport_options=transport_keys(worker_id)) as consumer:
        channel: Any = consumer.default_channel
        message = QUEUE(channel).get(no_ack=False)
        assert message is not None and message.payload == body
        channel.qos._delivered.clear()


def queued(redis_url: str) -> list[str]:
    with Connection(redis_url) as connection:
        message = QUEUE(connection.default_channel).get(no_ack=True)
        return [] if message is None else [message.payload]


def liveness(client: redis.Redis, worker_id: str, clock: Clock) -> Liveness:
    return Liveness(client, worker_id, TTL_S, lambda other: restore_deliveries(app, other), clock)


def test_a_dead_workers_delivery_is_restored_once_the_sweeper_held_its_own_beat_a_ttl(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    dead = liveness(client, "dead", clock)
    dead.beat()
    hold_a_delivery(redis_url, "dead", "batch-1")
    assert client.hlen("unacked:dead") == 1 and queued(redis_url) == []
    client.delete(heartbeat_key("dead"))  # its TTL ran out: SIGKILLed, nobody refreshed it

    survivor = liveness(client, "survivor", clock)
    survivor.beat()
    assert survivor.sweep() == []  # a sweeper's own beat must hold a TTL before it judges
    clock.now += TTL_S
    survivor.beat()
    assert survivor.sweep() == ["dead"]
    assert queued(redis_url) == ["batch-1"]
    assert client.smembers(REGISTRY) == {b"survivor"}
    assert not client.exists("unacked:dead", "unacked_index:dead")
    assert survivor.sweep() == []  # nothing twice


def test_a_live_worker_keeps_its_deliveries(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    live = liveness(client, "live", clock)
    live.beat()
    hold_a_delivery(redis_url, "live", "batch-2")
    sweeper = liveness(client, "sweeper", clock)
    sweeper.beat()
    clock.now += TTL_S
    sweeper.beat()
    assert sweeper.sweep() == []
    assert client.hlen("unacked:live") == 1 and queued(redis_url) == []


def test_a_lapsed_heartbeat_is_announced_again_and_judges_no_one_for_a_ttl(redis_url: str) -> None:
    """After Redis stalled every heartbeat is gone: a worker finding its own gone waits a TTL,
    so the others (announcing themselves again meanwhile) are not taken for dead."""
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    a, b = liveness(client, "a", clock), liveness(client, "b", clock)
    a.beat()
    b.beat()
    hold_a_delivery(redis_url, "b", "batch-3")
    clock.now += TTL_S
    client.delete(heartbeat_key("a"), heartbeat_key("b"))  # Redis frozen past the TTL
    a.beat()
    assert client.exists(heartbeat_key("a")) and a.sweep() == []
    b.beat()
    clock.now += TTL_S
    assert a.sweep() == []
    assert client.hlen("unacked:b") == 1


def test_the_heartbeat_is_refreshed_while_redis_is_full(redis_url: str) -> None:
    """PEXPIRE needs no memory: a full Redis (noeviction) cannot make a live worker look dead."""
    client = redis.Redis.from_url(redis_url)
    clock = Clock()
    worker = liveness(client, "w", clock)
    worker.beat()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used))
    client.config_set("maxmemory-policy", "noeviction")
    try:
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            client.set("filler", b"x" * 100_000)
        # Nearly run out, not gone: a heartbeat that lapsed would need a SET, which a full Redis
        # refuses (1 ms here made the test race its own expiry under load).
        client.pexpire(heartbeat_key("w"), 2000)
        clock.now += TTL_S
        worker.beat()
        assert client.pttl(heartbeat_key("w")) > 2000
        assert worker.trusted_from == 1000.0  # no lapse: it still judges the others
    finally:
        client.config_set("maxmemory", "0")
