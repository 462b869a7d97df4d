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
    FakeProbe,
    FakePublisher,
    bridge_settings,
    event_ids,
    events,
)
from worker.ingest.bridge import consumer as consumer_module
from worker.ingest.bridge.consumer import Bridge

pytestmark = pytest.mark.unit


class Harness:
    def __init__(self, partitions: int = 2, **settings: object) -> None:
        self.clock = FakeClock()
        self.consumer = FakeConsumer(partitions, self.clock)
        self.publisher = FakePublisher()
        self.probe = FakeProbe()
        self.letters = FakeDeadLetters()
        self.acks = FakeAcks()
        self.bridge = Bridge(bridge_settings(**settings), self.publisher, self.probe, self.letters,  # type: ignore[arg-type]
                             self.acks, clock=self.clock, sleep=self.clock.sleep,
                             consumer=self.consumer)  # type: ignore[arg-type]
        self.bridge.consumer.subscribe(["events"], on_assign=self.bridge._on_assign,
                                       on_revoke=self.bridge._on_revoke, on_lost=self.bridge._on_lost)

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
    real = consumer_module.decode_event  # type: ignore[attr-defined]  # patched below, as the loop sees it

    def flaky(raw: bytes) -> object:
        if b"BOOM" in raw:
            raise MemoryError("not this time")
        return real(raw)

    monkeypatch.setattr(consumer_module, "decode_event", flaky)
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

    class ConfirmingAcks(FakeAcks):
        def drain(self, partitions: list[int]) -> list:  # the worker stores what was published
            for batch in h.publisher.published:
                self.store(batch)
            return super().drain(partitions)

    h.bridge.acks = ConfirmingAcks()
    h.bridge._shutdown()
    h.consumer.close()
    assert h.consumer.committed == {0: 15}


def test_revoked_partitions_drop_their_unpublished_work_and_commit_only_confirmed() -> None:
    h = Harness(bridge_min_batch=50, bridge_max_batch=50)
    h.consumer.produce(0, events(20))
    h.consumer.produce(1, events(20, seed=2))
    h.steps(2)
    assert h.publisher.published == []  # both partitions gather in one batch not yet full
    h.consumer.revoke([0])
    assert all(e.partition == 1 for e in h.bridge.batcher.current.items)
    h.clock.now += 11  # max batch age
    h.steps(2)
    assert {p for batch in h.publisher.published for p, _, _ in batch.ranges()} == {1}


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
