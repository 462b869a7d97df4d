"""The bridge loop against fakes (a consumer over in-memory partitions, a fake clock):
every rule runs in milliseconds; the same rules run on Tansu and Redis in the fault suite."""

from __future__ import annotations

import json

import pytest

from tests.support.bridge_fakes import (
    FakeAcks,
    FakeClock,
    FakeConsumer,
    FakeDeadLetters,
    FakeGuardRecords,
    FakeProbe,
    FakePublisher,
    bridge_settings,
    event_ids,
    events,
)
from worker.celeryapp.resources import compose_bridge
from worker.ingest.bridge import decode as decode_module
from worker.ingest.bridge.guard_state import GuardStop

pytestmark = pytest.mark.unit


class Harness:
    def __init__(self, partitions: int = 2, **settings: object) -> None:
        self.clock = FakeClock()
        self.consumer = FakeConsumer(partitions, self.clock)
        self.publisher = FakePublisher()
        self.probe = FakeProbe()
        self.letters = FakeDeadLetters()
        self.acks = FakeAcks()
        self.records = FakeGuardRecords()
        self.bridge = compose_bridge(bridge_settings(**settings), self.consumer, self.publisher,  # type: ignore[arg-type]
                                     self.probe, self.letters, self.acks, self.records,  # type: ignore[arg-type]
                                     clock=self.clock, sleep=self.clock.sleep)
        self.bridge.subscribe()

    def steps(self, n: int = 1) -> None:
        for _ in range(n):
            self.bridge.step()
            self.clock.now += 0.05

    def store_all(self) -> None:
        for batch in self.publisher.published:
            self.acks.store(batch)

    def published_ids(self) -> list[str]:
        return [p.event_id for batch in self.publisher.published for p in batch.points]


def test_offsets_are_stored_only_once_the_store_confirmed() -> None:
    h = Harness()
    h.consumer.produce(0, events(30))
    h.steps(3)
    assert len(h.publisher.published) == 3
    assert h.consumer.stored == {}, "published is not stored: nothing may be committed yet"
    h.acks.store(h.publisher.published[1])  # the middle batch first
    h.steps(5)
    assert h.consumer.stored == {}, "a later batch cannot move the commit point past an earlier one"
    h.acks.store(h.publisher.published[0])
    h.steps(5)
    assert h.consumer.stored == {0: 20}
    h.acks.store(h.publisher.published[2])
    h.steps(5)
    assert h.consumer.stored == {0: 30}


def test_a_lost_batch_is_read_again_and_published_again() -> None:
    h = Harness()
    payloads = events(20)
    h.consumer.produce(0, payloads)
    h.steps(3)
    _lost, second = h.publisher.published
    h.acks.store(second)  # the first one was lost (Redis forgot it, or its worker died)
    h.clock.now += 55  # the idle polls of the steps above took ~2 s already
    h.steps(1)
    assert h.bridge.stats.rewinds == 0
    h.clock.now += 5
    h.steps(4)
    assert h.bridge.stats.rewinds == 1
    again = h.publisher.published[2:]
    assert [p.event_id for batch in again for p in batch.points] == event_ids(payloads)
    assert h.consumer.stored == {}
    h.store_all()
    h.steps(5)
    assert h.consumer.stored == {0: 20}


def test_a_waiting_batch_is_not_read_again() -> None:
    h = Harness()
    h.consumer.produce(0, events(10))
    h.steps(2)
    (batch,) = h.publisher.published
    for _ in range(10):  # the store is down for 10 minutes; the task signs life at each retry
        h.clock.now += 30
        h.acks.alive(batch)
        h.steps(1)
    assert h.bridge.stats.rewinds == 0 and len(h.publisher.published) == 1
    h.acks.store(batch)
    h.steps(3)
    assert h.consumer.stored == {0: 10}


def test_unconfirmed_batches_pause_the_bridge_and_kafka_keeps_the_rest() -> None:
    h = Harness(bridge_max_in_flight=4)
    h.consumer.produce(0, events(200))
    h.steps(20)
    assert h.bridge.stats.paused and len(h.publisher.published) == 4
    held = h.consumer.position[0]
    h.steps(20)
    assert h.consumer.position[0] == held, "nothing more is taken from Kafka while paused"
    for _ in range(30):  # the store comes back: the worker catches up
        h.store_all()
        h.steps(3)
    assert sorted(h.published_ids()) == sorted(event_ids(events(200)))
    assert h.consumer.stored == {0: 200}


@pytest.mark.parametrize("poison", [
    b'{"id": "\xff\xfe", "timestamp": "2021-01-01T00:00:00Z"}',
    b'{"timestamp": "2021-01-01T00:00:00Z", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    b"\x00\x01\x02",
    b"",
])
def test_a_poison_message_is_a_dead_letter_and_the_partition_moves_on(poison: bytes) -> None:
    h = Harness()
    good = events(19)
    h.consumer.produce(0, [*good[:7], poison, *good[7:]])
    h.steps(4)
    h.store_all()
    h.steps(3)
    assert len(h.letters.letters) == 1 and h.letters.letters[0].origin == "events/0@7"
    assert sorted(h.published_ids()) == sorted(event_ids(good))
    assert h.consumer.stored == {0: 20}


def test_an_unexpected_error_while_taking_a_message_is_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    real = decode_module.decode_event  # type: ignore[attr-defined]  # patched below, as the loop sees it

    def flaky(raw: bytes) -> object:
        if b"BOOM" in raw:
            raise MemoryError("not this time")
        return real(raw)

    monkeypatch.setattr(decode_module, "decode_event", flaky)
    h = Harness()
    good = events(9)
    h.consumer.produce(0, [*good[:3], b'{"BOOM": 1}', *good[3:]])
    h.steps(3)
    h.store_all()
    h.steps(3)
    assert "unexpected MemoryError: not this time" in h.letters.letters[0].reason
    assert h.consumer.stored == {0: 10}


def test_a_rewind_does_not_write_the_same_dead_letter_twice() -> None:
    h = Harness()
    good = events(9)
    h.consumer.produce(0, [*good[:3], b"not json", *good[3:]])
    h.steps(3)
    h.clock.now += 60  # its batch was lost
    h.steps(3)
    assert h.bridge.stats.rewinds == 1
    h.store_all()
    h.steps(3)
    assert len(h.letters.letters) == 1
    assert h.consumer.stored == {0: 10}


def test_dead_letters_are_confirmed_before_their_batch_is_published() -> None:
    h = Harness()
    h.letters.failing = True
    h.consumer.produce(0, [b"not json", *events(9)])
    h.steps(3)
    assert h.publisher.published == [], "a batch waits behind its unwritten dead letter"
    h.letters.failing = False
    h.clock.now += 31
    h.steps(3)
    assert len(h.letters.letters) == 1 and len(h.publisher.published) == 1


def test_sigterm_while_redis_refuses_keeps_the_deadline_and_commits_nothing_unstored() -> None:
    h = Harness(bridge_shutdown_deadline_s=20.0)
    h.consumer.produce(0, events(20))
    h.steps(3)
    h.store_all()
    h.steps(3)
    assert h.consumer.stored == {0: 20}
    h.consumer.produce(0, events(5, seed=9))
    h.steps(1)  # taken, still gathering
    assert len(h.bridge.batcher.current) == 5
    h.publisher.failing = True
    started = h.clock.now
    h.bridge.stop()
    h.bridge._shutdown()
    h.consumer.close()
    assert h.clock.now - started <= 20.0
    assert h.consumer.committed == {0: 20}, "the unpublished tail stays in Kafka"


def test_sigterm_waits_for_the_confirmations_of_what_it_published() -> None:
    h = Harness()
    h.consumer.produce(0, events(15))
    h.steps(3)
    h.bridge.stop()
    h.bridge.commit.acks = ConfirmingAcks(h.publisher)
    h.bridge._shutdown()
    h.consumer.close()
    assert h.consumer.committed == {0: 15}


class ConfirmingAcks(FakeAcks):
    """A worker that stores every published batch as soon as the bridge looks."""

    def __init__(self, publisher: FakePublisher) -> None:
        super().__init__()
        self.publisher = publisher
        self.seen = 0

    def drain(self, partitions: list[int]) -> list:
        for batch in self.publisher.published[self.seen:]:
            self.store(batch)
        self.seen = len(self.publisher.published)
        return super().drain(partitions)


def gathering(h: Harness) -> None:
    """Both partitions' events sit in one batch not yet full (nothing published)."""
    h.consumer.produce(0, events(20))
    h.consumer.produce(1, events(20, seed=2))
    h.steps(2)
    assert h.publisher.published == []


def test_a_revoke_publishes_what_is_held_and_commits_it_once_confirmed() -> None:
    h = Harness(bridge_min_batch=50, bridge_max_batch=50, bridge_revoke_deadline_s=10.0)
    h.bridge.commit.acks = h.acks = ConfirmingAcks(h.publisher)
    gathering(h)
    started = h.clock.now
    h.consumer.revoke([0])
    assert h.clock.now - started < 1, "returns as soon as the revoked partition is confirmed"
    assert [b.ranges() for b in h.publisher.published] == [[(0, 0, 19), (1, 0, 19)]]
    assert h.consumer.stored[0] == 20, "stored while still owned: the new owner starts after it"
    assert h.bridge.partitions.owned == {1} and h.bridge.batcher.current.items == []


def test_a_revoke_waits_at_most_its_deadline_and_leaves_the_unconfirmed_to_the_new_owner() -> None:
    h = Harness(bridge_min_batch=50, bridge_max_batch=50, bridge_revoke_deadline_s=10.0)
    gathering(h)
    started = h.clock.now
    h.consumer.revoke([0])
    assert 9.5 <= h.clock.now - started <= 10.0
    assert len(h.publisher.published) == 1  # published, never confirmed:
    assert 0 not in h.consumer.stored and h.consumer.position[0] == 0  # the new owner reads it again
    h.store_all()  # partition 1's part of it is confirmed later, and committed
    h.steps(3)
    assert h.consumer.stored == {1: 20}


def test_a_revoke_while_redis_refuses_publishes_lets_go_at_once() -> None:
    h = Harness(bridge_min_batch=50, bridge_max_batch=50, bridge_revoke_deadline_s=10.0)
    gathering(h)
    h.publisher.failing = True
    started = h.clock.now
    h.consumer.revoke([0])
    assert h.clock.now - started < 0.5
    assert all(e.partition == 1 for batch in h.bridge.publish.ready for e in batch.items), "partition 0's work dropped"
    assert 0 not in h.consumer.stored
    h.publisher.failing = False
    h.clock.now += 31
    h.steps(3)
    assert {p for batch in h.publisher.published for p, _, _ in batch.ranges()} == {1}


def test_a_revoke_under_backpressure_publishes_nothing_more_but_waits_for_what_is_in_flight() -> None:
    h = Harness()

    def deep(n: int = 1) -> None:  # the first publish fills the ingest queue past the watermark
        h.probe.depth = 1000

    h.probe.note_published = deep  # type: ignore[method-assign]
    h.consumer.produce(0, events(20))
    h.steps(1)
    assert len(h.publisher.published) == 1 and len(h.bridge.publish.ready) == 1  # one in flight, one held back
    h.bridge.commit.acks = h.acks = ConfirmingAcks(h.publisher)
    h.consumer.revoke([0])
    assert len(h.publisher.published) == 1, "what backpressure holds is left to the new owner"
    assert h.consumer.stored == {0: 10}, "what was in flight is confirmed and stored before letting go"


def test_after_a_burst_the_tail_is_published_within_about_a_second() -> None:
    h = Harness(bridge_min_batch=1, bridge_max_batch=5000, bridge_target_interval_s=5.0)
    h.consumer.produce(0, events(2503))
    while h.consumer.position[0] < 2503:  # the burst: the worker keeps up
        h.steps(1)
        h.store_all()
    quiet_since = h.clock.now
    while len(h.published_ids()) < 2503:
        h.steps(1)
        h.store_all()
        held = 2503 - len(h.published_ids())
        assert h.clock.now - quiet_since < 1.6, f"held {held} events {h.clock.now - quiet_since:.1f} s after"


def test_every_published_batch_says_where_to_confirm() -> None:
    h = Harness()
    h.consumer.produce(0, events(10))
    h.consumer.produce(1, events(10, seed=2))
    h.steps(3)
    for batch in h.publisher.published:
        assert batch.acks["key"] == "aggregator:acks:trend-aggregator:events"
        assert batch.task_id.startswith("ingest:events:")
        assert json.dumps(batch.acks)  # JSON-serializable: it travels as a task kwarg


# -- the dead-letter guard -------------------------------------------------------------------
def stopped(h: Harness) -> bool:
    return h.bridge.guard.stop is not None


def settle(h: Harness, steps: int = 40) -> None:
    """Let the batcher flush (max age / idle), the worker confirm and the offsets move."""
    for _ in range(steps):
        h.store_all()
        h.steps(1)


def test_a_stream_turning_invalid_stops_the_bridge_and_kafka_keeps_the_rest() -> None:
    """100 valid events, then 15 invalid, then 100 valid, on one partition; the guard's window
    is 20 events at 0.5: it trips at the 11th invalid one (9 valid + 11 invalid). That one
    is dead-lettered; everything after it stays in Kafka, although one consume() fetched it
    all; the valid events held are published and committed once confirmed."""
    h = Harness(bridge_max_dlq_ratio=0.5, bridge_dlq_min_events=20)
    valid, later, other = events(100), events(100, seed=2), events(50, seed=3)
    h.consumer.produce(0, [*valid, *[b"not json"] * 15, *later])
    h.consumer.produce(1, other)  # fetched in the same consume() as partition 0's, after it: none taken
    settle(h)
    assert h.bridge.guard.stop is not None and h.bridge.stats.dlq_guard_tripped
    assert "11 of the last 20 events were dead-lettered" in h.bridge.guard.stop
    assert len(h.letters.letters) == 11
    assert sorted(h.published_ids()) == sorted(event_ids(valid))
    assert h.consumer.stored == {0: 111}, "committed up to the event that tripped it, not past"
    assert h.consumer.paused == {0, 1}
    record = h.records.read()
    assert record is not None and record.settings == "BRIDGE_MAX_DLQ_RATIO=0.5 BRIDGE_DLQ_MIN_EVENTS=20"
    settle(h, 100)  # a long stop: nothing more is taken, and the pause is not lifted meanwhile
    assert len(h.letters.letters) == 11 and h.consumer.stored == {0: 111}
    assert h.bridge.stats.pauses == 1
    h.records.clear()  # `aggregator bridge resume`
    settle(h, 60)
    assert not stopped(h) and h.consumer.paused == set()
    assert len(h.letters.letters) == 15, "each invalid event dead-lettered once"
    assert sorted(h.published_ids()) == sorted(event_ids(valid) + event_ids(later) + event_ids(other)), \
        "each valid event once, those fetched but left in Kafka included"
    assert h.consumer.stored == {0: 215, 1: 50}


def test_a_recorded_stop_holds_a_starting_bridge_and_survives_a_rebalance() -> None:
    h = Harness(bridge_max_dlq_ratio=0.5, bridge_dlq_min_events=20)
    h.records.stop = GuardStop("another bridge tripped", "BRIDGE_MAX_DLQ_RATIO=0.5 BRIDGE_DLQ_MIN_EVENTS=20",
                               "2026-01-01T00:00:00Z", "host:1")
    h.consumer.produce(0, events(30))
    h.bridge.guard.poll(h.clock(), force=True)  # as run() does before subscribing
    settle(h, 20)
    assert h.publisher.published == [] and h.bridge.stats.consumed == 0
    h.consumer.revoke([0, 1])  # a rebalance: the partitions come back paused
    settle(h, 20)
    assert h.consumer.assigned == {0, 1} and h.consumer.paused == {0, 1}
    assert h.bridge.stats.consumed == 0
    h.records.clear()
    settle(h, 40)
    assert len(h.published_ids()) == 30 and h.consumer.stored == {0: 30}


def test_a_stop_decided_under_other_settings_is_lifted_by_a_bridge_started_with_new_ones() -> None:
    h = Harness(bridge_max_dlq_ratio=1.0)
    h.records.stop = GuardStop("tripped", "BRIDGE_MAX_DLQ_RATIO=0.5 BRIDGE_DLQ_MIN_EVENTS=1000", "", "")
    h.consumer.produce(0, [b"not json"] * 3000)
    h.bridge.guard.poll(h.clock(), force=True)
    settle(h, 40)
    assert h.records.read() is None and h.bridge.guard.stop is None
    assert len(h.letters.letters) == 3000 and h.consumer.stored == {0: 3000}, "1.0: the guard is off"


def test_the_stop_holds_while_redis_cannot_say_it_was_lifted() -> None:
    h = Harness(bridge_max_dlq_ratio=0.5, bridge_dlq_min_events=10)
    h.consumer.produce(0, [b"not json"] * 40)
    settle(h)
    assert h.bridge.guard.stop is not None and len(h.letters.letters) == 10
    h.records.failing = True
    h.records.stop = None
    settle(h, 40)
    assert h.bridge.guard.stop is not None and len(h.letters.letters) == 10
    h.records.failing = False
    settle(h, 40)
    assert h.bridge.guard.stop is not None, "resumed, and the stream is still invalid: tripped again"
    assert len(h.letters.letters) == 20 and h.consumer.stored == {0: 20}
