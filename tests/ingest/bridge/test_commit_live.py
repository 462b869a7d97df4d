"""A commit the broker refuses is logged by the bridge's consumer, on Tansu.

The bridge commits through librdkafka's auto-commit; a refused commit (a member a rebalance
fenced, the coordinator moving) leaves the partitions' committed offsets behind, so their
next owner publishes those events again. Without the ``on_commit`` callback nothing would
say so. Here a client that is not a member of the group commits while the group has one:
Tansu refuses it (``UNKNOWN_MEMBER_ID``), as it refuses a fenced member's.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from tests.support.devstack.services import KafkaBroker
from worker.celeryapp.resources import consumer_config
from worker.config.settings import Settings
from worker.ingest.deadletter import ensure_topic

pytestmark = pytest.mark.integration

REFUSED = "offset commit refused: the next owner reads these partitions' events since their last commit again"


def _refusals(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage() == REFUSED]


def _poll_until(consumer: Consumer, done: object, what: str, polls: int = 100) -> None:
    """Serve the consumer's callbacks (``poll`` waits up to 0.1 s for an event) until ``done()``."""
    for _ in range(polls):
        if done():  # type: ignore[operator]
            return
        consumer.poll(0.1)
    raise AssertionError(f"not within {polls} polls: {what}")


def test_a_refused_commit_is_logged_and_nothing_stored_is_not(kafka: KafkaBroker,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="worker.ingest.bridge.commit")
    topic = f"commits-{uuid.uuid4().hex[:8]}"
    ensure_topic(kafka.bootstrap, topic, 2)
    config = consumer_config(Settings(kafka_bootstrap_servers=kafka.bootstrap, kafka_topic=topic,
                                      kafka_group_id=f"group-{uuid.uuid4().hex[:8]}"))
    member, stranger = Consumer(config), Consumer(config)
    try:
        member.subscribe([topic])
        _poll_until(member, lambda: len(member.assignment()) == 2, "the member owns both partitions")
        # A commit with no offset stored (librdkafka reports _NO_OFFSET) is not a refusal.
        calls = len(caplog.records)
        member.commit(asynchronous=True)
        for _ in range(12):
            member.poll(0.1)
        assert _refusals(caplog) == [], caplog.records[calls:]

        stranger.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=True)
        _poll_until(stranger, lambda: _refusals(caplog), "the refused commit is logged")
        (record,) = _refusals(caplog)
        assert record.levelno == logging.WARNING
        assert record.partitions == [0]  # type: ignore[attr-defined]
        assert "UNKNOWN_MEMBER_ID" in record.error  # type: ignore[attr-defined]
    finally:
        stranger.close()
        member.close()
