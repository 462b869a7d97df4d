"""The guard against kombu 5.7's restore crash (worker/celeryapp/kombu_guard.py), on a real Redis.

The crash needs a race (Celery closes the channel after the transport dropped its client);
here that state is made directly: a channel with one unacknowledged delivery whose
transport has lost its client, as after a lost connection. kombu's own method then raises
the AttributeError that ended the worker; the guarded one leaves the delivery to the
visibility sweep and lets Celery reconnect. When a kombu release fixes the bug, the first
test fails and says so: the guard can then go.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from kombu import Connection

from worker.celeryapp.kombu_guard import guard_restore_unacked, guarded

pytestmark = pytest.mark.integration


def channel_after_a_lost_connection(redis_url: str) -> Any:
    channel: Any = Connection(redis_url).default_channel
    raw = channel.prepare_message(b"{}")
    raw["properties"].update(delivery_tag="tag-1", delivery_info={"exchange": "ingest", "routing_key": "ingest"})
    channel.qos.append(channel.Message(raw, channel=channel), "tag-1")
    channel.connection.client = None  # what the lost connection leaves behind
    channel._pool = None
    return channel


def test_kombu_still_crashes_without_the_guard(redis_url: str) -> None:
    guard_restore_unacked()
    qos = channel_after_a_lost_connection(redis_url).qos
    original = type(qos).restore_unacked_once.__wrapped__
    with pytest.raises(AttributeError, match="hostname"):
        original(qos)  # if this stops raising, kombu fixed it: remove worker/celeryapp/kombu_guard.py


def test_the_guard_leaves_the_delivery_and_lets_the_worker_go_on(redis_url: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    guard_restore_unacked()
    guard_restore_unacked()  # idempotent: one wrapper, not two
    qos = channel_after_a_lost_connection(redis_url).qos
    assert not hasattr(type(qos).restore_unacked_once.__wrapped__, "__wrapped__")
    with caplog.at_level(logging.WARNING, logger="worker.celeryapp.kombu_guard"):
        assert qos.restore_unacked_once() is None
    assert "unacked deliveries left for the visibility sweep" in caplog.text


def test_any_other_attribute_error_still_stops_the_worker() -> None:
    def broken(self: Any, stderr: Any = None) -> None:
        raise AttributeError("something else entirely")

    with pytest.raises(AttributeError, match="something else"):
        guarded(broken)(object())
