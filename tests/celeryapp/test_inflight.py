"""A worker's pop (worker/celeryapp/inflight.py) on a real Redis: kombu's consumer on the
worker's transport, the trace a pop leaves, and what a dead worker's sweep does with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue

from worker.celeryapp.inflight import Transport, inflight_prefix, restore_inflight
from worker.celeryapp.liveness import transport_keys

pytestmark = pytest.mark.integration

QUEUE = Queue("ingest", Exchange("ingest"), routing_key="ingest")


def publish(redis_url: str, *bodies: str) -> None:
    with Connection(redis_url) as producer:
        for body in bodies:
            producer.Producer().publish(body, exchange=QUEUE.exchange, routing_key="ingest", declare=[QUEUE])


def take_one(redis_url: str, worker_id: str) -> Any:
    """One delivery to ``worker_id``, as its worker process pops it; then the process "dies":
    it forgets the delivery without restoring it, as SIGKILL leaves it."""
    options = {**transport_keys(worker_id), "inflight_prefix": inflight_prefix(worker_id)}
    with Connection(redis_url, transport=Transport, transport_options=options) as connection:
        taken: list[Any] = []
        with connection.Consumer(QUEUE, callbacks=[lambda _body, message: taken.append(message)],
                                 accept=["text/plain"], auto_declare=False):
            connection.drain_events(timeout=5)
        channel: Any = connection.default_channel
        channel.qos._delivered.clear()
        return taken[0]


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.config_set("maxmemory", 0)  # the session's Redis: as the next test expects it


def test_a_delivered_message_is_in_the_workers_unacked_hash_only(redis_url: str, client: redis.Redis) -> None:
    publish(redis_url, "batch-1")
    assert take_one(redis_url, "w1").payload == "batch-1"
    assert client.hlen("unacked:w1") == 1
    assert client.keys("inflight:*") == [] and client.llen("ingest") == 0


def test_a_message_popped_but_never_read_goes_back_to_the_head_of_its_queue(redis_url: str,
                                                                              client: redis.Redis) -> None:
    publish(redis_url, "batch-1", "batch-2")
    # What a worker's pop leaves when the worker dies before reading Redis's answer.
    assert client.blmove("ingest", f"{inflight_prefix('w1')}ingest", 1, "RIGHT", "LEFT") is not None
    assert client.llen("ingest") == 1
    assert restore_inflight(client, "w1") == 0
    assert client.keys("inflight:*") == []
    assert [take_one(redis_url, "w2").payload, take_one(redis_url, "w2").payload] == ["batch-1", "batch-2"]


def test_a_full_redis_still_hands_messages_out(redis_url: str, client: redis.Redis) -> None:
    """A full Redis refuses the traced pop (it may grow Redis); the worker pops plainly then,
    since consuming is what frees Redis."""
    publish(redis_url, "batch-1")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.blmove("ingest", "inflight:probe:ingest", 1, "RIGHT", "LEFT")
    assert take_one(redis_url, "w1").payload == "batch-1"
