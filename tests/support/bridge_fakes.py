"""Test doubles for the bridge loop, after arroyo's ``tests/processing/test_processor.py``:
a consumer over in-memory partitions, a fake clock, a Redis that records or refuses
publishes, a dead-letter topic, and the worker's confirmations, so every rule of the loop
(commit after store, rewind of a lost batch, poison events, backpressure, SIGTERM) runs
in milliseconds without a broker. The same rules run against Tansu and Redis in
``tests/ingest/bridge/test_consumer.py`` and the fault tests (``-m faults``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, TopicPartition

from worker.config.settings import Settings
from worker.core.events import Point, points_from_wire, points_to_wire
from worker.ingest.acks import Ack
from worker.ingest.bridge.depth import DepthReading
from worker.ingest.bridge.guard_state import GuardStop
from worker.ingest.deadletter import DeadLetter
from worker.ingest.errors import DeadLetterError, PublishError
from worker.ops.demo import demo_events

TOPIC = "events"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@dataclass
class FakeMessage:
    _partition: int
    _offset: int
    _value: bytes
    _error: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self._error

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return TOPIC


class FakeConsumer:
    """In-memory partitions; assigns all of them on the first consume()."""

    def __init__(self, partitions: int = 2, clock: FakeClock | None = None) -> None:
        self.log: dict[int, list[bytes]] = {p: [] for p in range(partitions)}
        self.position: dict[int, int] = {p: 0 for p in range(partitions)}
        self.paused: set[int] = set()
        self.stored: dict[int, int] = {}
        self.committed: dict[int, int] = {}
        self.assigned: set[int] = set()
        self.callbacks: dict[str, Callable[..., None]] = {}
        self.closed = False
        self.clock = clock

    # -- what tests do ---------------------------------------------------------------------
    def produce(self, partition: int, values: list[bytes]) -> None:
        self.log[partition].extend(values)

    def revoke(self, partitions: list[int]) -> None:
        self.callbacks["on_revoke"](self, [TopicPartition(TOPIC, p) for p in partitions])
        self.assigned -= set(partitions)
        for p in partitions:
            self.position[p] = self.committed.get(p, self.stored.get(p, 0))

    # -- the Consumer API the bridge uses -------------------------------------------------------
    def subscribe(self, topics: list[str], **callbacks: Callable[..., None]) -> None:
        self.callbacks = callbacks

    def consume(self, num_messages: int = 1, timeout: float = 0) -> list[FakeMessage]:
        if not self.assigned:
            self.assigned = set(self.log)
            self.callbacks["on_assign"](self, [TopicPartition(TOPIC, p) for p in sorted(self.assigned)])
        out: list[FakeMessage] = []
        for p in sorted(self.assigned - self.paused):
            while self.position[p] < len(self.log[p]) and len(out) < num_messages:
                out.append(FakeMessage(p, self.position[p], self.log[p][self.position[p]]))
                self.position[p] += 1
        if not out and self.clock is not None:
            self.clock.sleep(timeout)  # an idle poll takes its timeout
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {tp.partition for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {tp.partition for tp in partitions}

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned |= {tp.partition for tp in partitions}

    def seek(self, tp: TopicPartition) -> None:
        self.position[tp.partition] = tp.offset

    def store_offsets(self, offsets: list[TopicPartition]) -> None:
        for tp in offsets:
            assert tp.partition in self.assigned, "storing an offset of a partition not owned"
            self.stored[tp.partition] = tp.offset

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, len(self.log[tp.partition])

    def close(self) -> None:
        self.committed.update(self.stored)  # auto-commit of the stored offsets at close
        self.closed = True


@dataclass
class Published:
    points: list[Point]
    task_id: str
    acks: dict[str, Any]

    def ranges(self) -> list[tuple[int, int, int]]:
        return [(p, first, last) for p, first, last in self.acks["ranges"]]


class FakePublisher:
    queue = "ingest"
    worst_case_s = 4.2

    def __init__(self) -> None:
        self.published: list[Published] = []
        self.failing = False
        self.declared = 0

    def declare(self) -> None:
        self.declared += 1

    def publish(self, points: list[Point], task_id: str, acks: dict[str, Any] | None = None) -> None:
        if self.failing:
            raise PublishError("Redis refuses writes (test)")
        # Through the wire form, as in production: what the worker would decode.
        self.published.append(Published(points_from_wire(points_to_wire(points)), task_id, acks or {}))


class FakeProbe:
    def __init__(self) -> None:
        self.depth = 0

    def read(self) -> DepthReading:
        return DepthReading(self.depth, True)

    def note_published(self, n: int = 1) -> None:
        pass

    def invalidate(self) -> None:
        pass


class FakeDeadLetters:
    timeout_s = 10.0

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []
        self.failing = False

    def write(self, letters: list[DeadLetter]) -> None:
        if self.failing:
            raise DeadLetterError("dead-letter topic unreachable (test)")
        self.letters.extend(letters)


@dataclass
class FakeAcks:
    """The worker's side: tests confirm published batches (or lose them)."""

    pending: list[Ack] = field(default_factory=list)

    def store(self, batch: Published) -> None:
        self.pending.extend(Ack(p, first, last, True) for p, first, last in batch.ranges())

    def alive(self, batch: Published) -> None:
        self.pending.extend(Ack(p, first, last, False) for p, first, last in batch.ranges())

    def drain(self, partitions: list[int]) -> list[Ack]:
        taken = [a for a in self.pending if a.partition in partitions]
        self.pending = [a for a in self.pending if a.partition not in partitions]
        return taken


class FakeGuardRecords:
    """The group's dead-letter-guard record (a Redis key in production)."""

    def __init__(self) -> None:
        self.stop: GuardStop | None = None
        self.failing = False

    def read(self) -> GuardStop | None:
        if self.failing:
            raise ConnectionError("Redis down (test)")
        return self.stop

    def write(self, stop: GuardStop) -> None:
        if self.failing:
            raise ConnectionError("Redis down (test)")
        self.stop = self.stop or stop

    def clear(self) -> GuardStop | None:
        stop, self.stop = self.stop, None
        return stop


def events(n: int, seed: int = 1) -> list[bytes]:
    return list(demo_events(n, 5, seed=seed))


def event_ids(payloads: list[bytes]) -> list[str]:
    return [str(json.loads(p)["id"]) for p in payloads]


def bridge_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"kafka_topic": TOPIC, "bridge_min_batch": 10, "bridge_max_batch": 10,
                              "bridge_confirm_timeout_s": 60.0, "bridge_max_in_flight": 6,
                              "bridge_queue_high_watermark": 100, "bridge_queue_low_watermark": 10,
                              "bridge_shutdown_deadline_s": 20.0, "bridge_poll_timeout_s": 0.5}
    values.update(overrides)
    return Settings(_env_file=None, **values)
