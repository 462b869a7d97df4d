"""Each step of the bridge alone, on a fake clock, with fakes only where the step meets the
outside (consumer, publisher, dead-letter topic, confirmations, the guard's record)."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from tests.support.bridge_fakes import (
    TOPIC,
    FakeAcks,
    FakeClock,
    FakeConsumer,
    FakeDeadLetters,
    FakeGuardRecords,
    FakeMessage,
    FakeProbe,
    FakePublisher,
    events,
)
from worker.ingest.acks import Ack
from worker.ingest.bridge import decode as decode_module
from worker.ingest.bridge.ceiling import Batch
from worker.ingest.bridge.commit import Commit, log_refused_commit
from worker.ingest.bridge.decode import Entry, decode
from worker.ingest.bridge.dlq_guard import DlqGuard
from worker.ingest.bridge.flow import Backpressure
from worker.ingest.bridge.guard_state import GuardStop, GuardSync
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.bridge.pause import Pause
from worker.ingest.bridge.publish import Publish
from worker.ingest.bridge.state import BridgeStats, Partitions
from worker.ingest.deadletter import event_letter

pytestmark = pytest.mark.unit


# -- decode and validate -----------------------------------------------------------------------
def test_decode_makes_a_point_or_a_dead_letter_and_skips_client_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    valid = decode(FakeMessage(0, 3, events(1)[0]))  # type: ignore[arg-type]
    assert valid is not None and valid.entry.point is not None and valid.reason is None and valid.nbytes > 0
    invalid = decode(FakeMessage(1, 7, b"not json"))  # type: ignore[arg-type]
    assert invalid is not None and invalid.entry.point is None and invalid.letter is not None
    assert invalid.letter.origin == f"{TOPIC}/1@7" and "JSON" in (invalid.reason or "")
    assert decode(FakeMessage(0, 0, b"", KafkaError(KafkaError._PARTITION_EOF))) is None  # type: ignore[arg-type]

    def boom(raw: bytes) -> object:
        raise MemoryError("not this time")

    monkeypatch.setattr(decode_module, "decode_event", boom)
    taken = decode(FakeMessage(0, 4, events(1)[0]))  # type: ignore[arg-type]
    assert taken is not None and taken.reason == "unexpected MemoryError: not this time"


# -- publish -------------------------------------------------------------------------------------
class PublishHarness:
    def __init__(self, max_in_flight: int = 6) -> None:
        self.clock = FakeClock()
        self.publisher, self.letters, self.probe = FakePublisher(), FakeDeadLetters(), FakeProbe()
        self.tracker, self.stats = OffsetTracker(60.0), BridgeStats()
        self.step = Publish(self.publisher, self.letters, self.probe, self.tracker,  # type: ignore[arg-type]
                            Backpressure(100, 10, max_in_flight), Partitions(TOPIC, {0, 1}), self.stats,
                            group="g", clock=self.clock)


def batch(partition: int, offsets: range, invalid: tuple[int, ...] = ()) -> Batch[Entry]:
    taken = {o: decode(FakeMessage(partition, o, e))  # type: ignore[arg-type]
             for o, e in zip(offsets, events(len(offsets)), strict=True)}
    return Batch([Entry(partition, o, None if o in invalid else taken[o].entry.point)
                  for o in offsets])


def letter(partition: int, offset: int) -> tuple[Entry, Any]:
    return Entry(partition, offset, None), event_letter(b"x", "bad", source="bridge", origin=None)


def test_publish_writes_dead_letters_before_the_batches_behind_them() -> None:
    h = PublishHarness()
    h.letters.failing = True
    h.step.letter(*letter(0, 2))
    h.step.hold([batch(0, range(5), invalid=(2,))])
    assert not h.step.flush() and h.publisher.published == [], "the batch waits behind its dead letter"
    assert h.step.backoff.blocked(h.clock()) and h.tracker.in_flight() == 0
    h.letters.failing = False
    assert h.step.flush() and len(h.letters.letters) == 1
    assert [b.ranges() for b in h.publisher.published] == [[(0, 0, 4)]] and h.tracker.in_flight() == 1
    h.step.letter(*letter(0, 2))  # read again after a rewind: written already
    assert not h.step.pending


def test_publish_holds_batches_under_backpressure_and_before_a_deadline() -> None:
    h = PublishHarness(max_in_flight=2)
    h.step.hold([batch(0, range(i * 5, i * 5 + 5)) for i in range(3)])
    assert not h.step.flush(gated=True) and len(h.publisher.published) == 2, "stops at BRIDGE_MAX_IN_FLIGHT"
    assert not h.step.flush(deadline=h.clock() + 4.0), "no attempt that could outlast the deadline"
    assert len(h.publisher.published) == 2 and not h.step.backoff.blocked(h.clock())
    h.step.drop({0})
    assert not h.step.pending


def test_a_batch_of_dead_letters_only_is_confirmed_without_a_task() -> None:
    h = PublishHarness()
    h.step.letter(*letter(1, 0))
    h.step.hold([batch(1, range(1), invalid=(0,))])
    assert h.step.flush() and h.publisher.published == []
    assert h.tracker.commit_points() == {1: 1}


# -- confirm and commit ----------------------------------------------------------------------------
def test_commit_stores_offsets_only_once_confirmed_and_reads_at_most_every_poll_interval() -> None:
    consumer, acks, tracker, stats = FakeConsumer(2), FakeAcks(), OffsetTracker(60.0), BridgeStats()
    consumer.assigned = {0, 1}
    step = Commit(consumer, tracker, acks, Partitions(TOPIC, {0, 1}), stats)  # type: ignore[arg-type]
    tracker.track(0, 0, 9, 0.0)
    tracker.track(1, 0, 4, 0.0)
    step.read_acks(0.0)
    assert consumer.stored == {} and step.waiting({0})
    acks.pending = [Ack(0, 0, 9, True)]
    step.read_acks(0.1)
    assert consumer.stored == {}, "read at most every POLL_S unless forced"
    step.read_acks(0.1, force=True)
    assert consumer.stored == {0: 10} and stats.confirmed_batches == 1
    assert not step.waiting({0}) and step.waiting({0, 1})


def test_a_commit_refused_for_some_partitions_names_them(caplog: pytest.LogCaptureFixture) -> None:
    """The broker's answer can refuse partitions one by one, with no error for the whole
    commit (librdkafka's ``TopicPartition.error`` is read-only, hence the stand-ins)."""
    fenced = KafkaError(KafkaError.ILLEGAL_GENERATION)
    answer = [SimpleNamespace(partition=0, error=None), SimpleNamespace(partition=3, error=fenced)]
    with caplog.at_level(logging.WARNING, logger="worker.ingest.bridge.commit"):
        log_refused_commit(None, answer)  # type: ignore[arg-type]
        log_refused_commit(None, [SimpleNamespace(partition=0, error=None)])  # type: ignore[list-item]
    (record,) = caplog.records
    assert record.partitions == [3] and "ILLEGAL_GENERATION" in record.error  # type: ignore[attr-defined]


# -- pause -------------------------------------------------------------------------------------------
def test_pause_follows_backpressure_and_the_guard_and_resumes_where_it_stopped() -> None:
    consumer, probe, stats = FakeConsumer(2), FakeProbe(), BridgeStats()
    partitions = Partitions(TOPIC)
    guard = GuardSync(DlqGuard(0.5, 10), None, stats)
    step = Pause(consumer, partitions, probe, OffsetTracker(60.0), Backpressure(100, 10, 6),  # type: ignore[arg-type]
                 guard, stats)
    step.assign(consumer, [TopicPartition(TOPIC, 0)])  # type: ignore[arg-type]
    partitions.next_offset[0] = 42
    probe.depth = 100
    step.update(0.0, blocked=False)
    assert step.paused and consumer.paused == {0} and step.why() == "queue"
    step.assign(consumer, [TopicPartition(TOPIC, 1)])  # type: ignore[arg-type]
    assert consumer.paused == {0, 1}, "a partition assigned while paused is paused at once"
    step.seek(0, 7)
    assert consumer.position[0] == 0, "no seek while paused: the resume seeks"
    probe.depth = 10
    guard.stop = "tripped"
    step.update(1.0, blocked=False)
    assert step.paused and step.why() == "dlq_guard"
    guard.stop = None
    step.update(2.0, blocked=True)
    assert step.paused and step.why() == "downstream failing"
    step.update(3.0, blocked=False)
    assert (step.paused, consumer.paused, consumer.position[0]) == (False, set(), 42)
    assert stats.pauses == 1


# -- the dead-letter guard's record ----------------------------------------------------------------
def test_guard_sync_records_a_trip_adopts_the_groups_stop_and_lifts_it_with_the_record() -> None:
    records, stats = FakeGuardRecords(), BridgeStats()
    sync = GuardSync(DlqGuard(0.5, 4), records, stats)
    for offset in range(4):
        sync.observe(0, offset, 0.0, "bad")
    assert sync.stop is not None and stats.dlq_guard_trips == 1 and records.read() is None
    sync.poll(0.1)
    record = records.read()
    assert record is not None and record.settings == sync.settings, "recorded in the same step"
    records.clear()
    stops: list[str | None] = []
    for now in (0.5, 1.2):  # the record is read about once a second
        sync.poll(now)
        stops.append(sync.stop)
    assert stops[0] is not None and stops[1] is None and sync.guard.tripped is None
    records.stop = GuardStop("another bridge", sync.settings, "", "")
    sync.poll(2.3)
    assert sync.stop == "another bridge"
    other = GuardSync(DlqGuard(1.0, 4), records, BridgeStats())
    other.poll(0.0, force=True)
    assert other.stop is None and records.read() is None, "a stop decided under other settings is lifted"
