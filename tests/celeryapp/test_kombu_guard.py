"""The guards against kombu 5.7's crashes on a lost connection (worker/celeryapp/kombu_guard.py),
on a real Redis.

The crashes need a race (Celery restores the deliveries after the transport dropped its
client; a task finishes and is acknowledged after Celery closed its channel); here those
states are made directly: a channel with one unacknowledged delivery whose transport has
lost its client, and a channel closed under its QoS. kombu's own methods then raise the
AttributeError that ended the worker; the guarded ones leave the delivery to the visibility
sweep and let Celery reconnect. When a kombu release fixes a bug, its "still crashes" test
fails and says so: that guard can then go. The same for the full-Redis guards, on a Redis
whose maxmemory is below what it uses.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from kombu import Connection

from worker.celeryapp.kombu_guard import guard_full_redis, guard_lost_connection, guarded

pytestmark = pytest.mark.integration


def channel_after_a_lost_connection(redis_url: str) -> Any:
    channel: Any = Connection(redis_url).default_channel
    raw = channel.prepare_message(b"{}")
    raw["properties"].update(delivery_tag="tag-1", delivery_info={"exchange": "ingest", "routing_key": "ingest"})
    channel.qos.append(channel.Message(raw, channel=channel), "tag-1")
    channel.connection.client = None  # what the lost connection leaves behind
    channel._pool = None
    return channel


def qos_of_a_closed_channel(redis_url: str) -> Any:
    """What a task finishing just after Celery closed its channel on a lost connection acks on
    (the close's own restore is the guarded crash above)."""
    channel = channel_after_a_lost_connection(redis_url)
    qos = channel.qos
    channel.close()
    return qos


def test_kombu_still_crashes_without_the_guard(redis_url: str) -> None:
    guard_lost_connection()
    qos = channel_after_a_lost_connection(redis_url).qos
    original = inspect.unwrap(type(qos).restore_unacked_once)
    with pytest.raises(AttributeError, match="hostname"):
        original(qos)  # if this stops raising, kombu fixed it: remove worker/celeryapp/kombu_guard.py


def test_kombu_still_crashes_acking_on_a_closed_channel(redis_url: str) -> None:
    guard_lost_connection()
    qos = qos_of_a_closed_channel(redis_url)
    with pytest.raises(AttributeError, match="client"):  # if not, kombu fixed it: drop "ack" and "reject"
        inspect.unwrap(type(qos).ack)(qos, "tag-1")
    with pytest.raises(AttributeError, match="client"):
        inspect.unwrap(type(qos).reject)(qos, "tag-1", requeue=True)


def test_the_guard_leaves_the_delivery_and_lets_the_worker_go_on(redis_url: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    guard_lost_connection()
    guard_lost_connection()  # idempotent: one wrapper, not two
    qos = channel_after_a_lost_connection(redis_url).qos
    assert not hasattr(type(qos).restore_unacked_once.__wrapped__, "__wrapped__")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.kombu_guard"):
        assert qos.restore_unacked_once() is None
    assert "unacked deliveries left for the visibility sweep" in caplog.text


def test_a_task_acknowledged_after_its_channel_closed_leaves_its_delivery_to_the_sweep(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    import worker.celeryapp.app  # noqa: F401 - installs every guard, in a worker's order

    qos = qos_of_a_closed_channel(redis_url)
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.kombu_guard"):
        assert qos.ack("tag-1") is None
        assert qos.reject("tag-1", requeue=True) is None
    assert caplog.text.count("the visibility sweep runs the task again") == 2


def test_any_other_attribute_error_still_stops_the_worker() -> None:
    def broken(self: Any, stderr: Any = None) -> None:
        raise AttributeError("something else entirely")

    live = SimpleNamespace(channel=SimpleNamespace(connection=SimpleNamespace(client=object())))
    with pytest.raises(AttributeError, match="something else"):
        guarded(broken, "")(live)


# -- a full Redis --------------------------------------------------------------------------------


@pytest.fixture
def full_redis(redis_url: str) -> Any:
    import redis

    client = redis.Redis.from_url(redis_url)
    client.config_set("maxmemory", 1)  # below what Redis uses: every denyoom command is refused
    yield client
    client.config_set("maxmemory", 0)


def delivery(channel: Any, tag: str) -> Any:
    raw = channel.prepare_message(b"{}")
    raw["properties"].update(delivery_tag=tag, delivery_info={"exchange": "ingest", "routing_key": "ingest"})
    return channel.Message(raw, channel=channel)


def test_kombu_still_fails_on_a_full_redis_without_the_guards(redis_url: str, full_redis: Any) -> None:
    import redis

    guard_full_redis()
    channel: Any = Connection(redis_url).default_channel
    qos = channel.qos
    with pytest.raises(redis.exceptions.OutOfMemoryError):  # kombu fixed it? then the guards can go
        inspect.unwrap(type(qos).append)(qos, delivery(qos.channel, "tag-1"), "tag-1")
    with pytest.raises(redis.exceptions.OutOfMemoryError):  # ZREM + HDEL, refused because inside MULTI
        inspect.unwrap(type(qos).ack)(qos, "tag-1")
    with pytest.raises(redis.exceptions.OutOfMemoryError):  # the same, for a task that failed for good
        inspect.unwrap(type(qos).reject)(qos, "tag-1")


def test_a_full_redis_delivery_is_kept_in_memory_and_acknowledged_without_new_memory(
        redis_url: str, full_redis: Any, caplog: pytest.LogCaptureFixture) -> None:
    guard_full_redis()
    guard_full_redis()  # idempotent
    channel: Any = Connection(redis_url).default_channel
    qos = channel.qos
    assert not hasattr(type(qos).append.__wrapped__, "__wrapped__")
    full_redis.config_set("maxmemory", 0)
    qos.append(delivery(channel, "recorded"), "recorded")  # recorded in Redis while there is room
    full_redis.config_set("maxmemory", 1)
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.kombu_guard"):
        qos.append(delivery(channel, "kept"), "kept")
    assert "delivery kept in this worker only" in caplog.text
    assert set(qos._delivered) >= {"recorded", "kept"}
    assert full_redis.hexists("unacked", "recorded") and not full_redis.hexists("unacked", "kept")
    qos.ack("recorded")
    qos.ack("kept")
    assert not full_redis.hexists("unacked", "recorded") and not full_redis.zscore("unacked_index", "recorded")
    assert {"recorded", "kept"} <= qos._dirty  # acknowledged in the worker too (kombu flushes them later)
    qos.restore_visible(interval=1)  # its lock (SET NX) is refused: skipped, not raised


def test_a_full_redis_rejected_delivery_goes_or_stays_in_the_unacked_hash(redis_url: str,
                                                                          full_redis: Any) -> None:
    """A task that failed for good (no requeue): its delivery goes, as an ack's. One to run
    again (requeue): Redis has no room to queue it, so it stays where a sweep finds it."""
    guard_full_redis()
    channel: Any = Connection(redis_url).default_channel
    qos = channel.qos
    full_redis.config_set("maxmemory", 0)
    for tag in ("failed", "again"):
        qos.append(delivery(channel, tag), tag)
    full_redis.config_set("maxmemory", 1)
    qos.reject("failed", requeue=False)
    qos.reject("again", requeue=True)
    assert not full_redis.hexists("unacked", "failed") and full_redis.hexists("unacked", "again")
    assert {"failed", "again"} <= qos._dirty
