"""The bridge loop: Kafka consumer group -> batches of points -> Celery ingest tasks.

Order of steps for every message (NOTES, after arroyo): decode/validate -> (invalid: dead
letter, confirmed) -> add to the batch -> publish the batch -> the ingest task stores it and
confirms -> store the offsets up to the confirmed point -> librdkafka commits stored offsets
(``enable.auto.offset.store=false`` + auto-commit; synchronous commits in rebalance callbacks
crashed others).

**End-to-end commit.** Redis is a queue that may forget, not the record: an offset is stored
for commit only when the event store holds everything before it (:mod:`worker.ingest.bridge.offsets`,
confirmations through :mod:`worker.ingest.acks`). A batch not confirmed within
``BRIDGE_CONFIRM_TIMEOUT_S`` (a Redis that lost its queue, a worker killed mid-batch) is read
again from Kafka and published again; the idempotent store write makes the copy harmless.

**Any bytes in, a point or a dead letter out.** Decoding raises nothing but
``InvalidEvent``, and any other exception while taking a message is a dead letter too, with
the exception as the reason: no message can stop a partition.

**Backpressure.** While the ingest queue is above the high watermark, or too many published
batches wait for their confirmation (a store outage), or Redis / the dead-letter topic is
failing, the bridge pauses its partitions and keeps polling; Kafka holds the data. It
resumes below the low watermarks, seeking each partition to the next offset it has not taken
(librdkafka purges prefetched messages on pause).

**Dead-letter guard.** Every event taken feeds :class:`~worker.ingest.bridge.dlq_guard.DlqGuard`;
when more than ``BRIDGE_MAX_DLQ_RATIO`` of the last ``BRIDGE_DLQ_MIN_EVENTS`` were invalid it
trips: the event that tripped it is dead-lettered, the rest of that poll is left in Kafka
(the next offset to take is where it stopped), the partitions are paused, what the batcher
holds is still published and committed once confirmed. The stop is recorded in Redis
(:mod:`worker.ingest.bridge.guard_state`), so every bridge of the group stops, a restart
stays stopped, and ``aggregator health bridge`` fails, until ``aggregator bridge resume``
or a restart with a changed setting lifts it.

**Rebalance (several bridges).** The group uses ``cooperative-sticky`` assignment: a bridge
joining or leaving moves only the partitions that change owner, so the others keep their
in-flight batches, their pause and their flow (an eager rebalance would take every
partition from every bridge at each change and have all their unconfirmed batches
published again). The callbacks get only the change: ``_on_assign`` adds partitions
(assigning them itself with ``incremental_assign`` and pausing them when the bridge is
paused: a pause before the assignment is lost), ``_on_revoke`` hands partitions over: it
publishes what it holds and waits up to ``BRIDGE_REVOKE_DEADLINE_S`` for the confirmations
of the revoked partitions, stores what is confirmed (auto-commit commits it before the
partitions move) and drops the rest, which the new owner reads again from the committed
offset. ``_on_lost`` (this bridge was expelled: its partitions already have a new owner)
publishes nothing and stores nothing.

**SIGTERM.** The handler sets a flag; the loop publishes what it holds and waits for the
confirmations within ``BRIDGE_SHUTDOWN_DEADLINE_S``, each blocking step bounded by what is
left of it; what is not confirmed is not committed and is read again after the restart.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.config.settings import Settings
from worker.core.events import InvalidEvent, Point, decode_event, point_size
from worker.ingest.acks import Ack, ack_spec
from worker.ingest.bridge.ceiling import Batch, Batcher, CeilingConfig, CeilingPolicy
from worker.ingest.bridge.depth import QueueDepthProbe
from worker.ingest.bridge.dlq_guard import DlqGuard, Trip
from worker.ingest.bridge.flow import Backoff, Backpressure
from worker.ingest.bridge.guard_state import GuardRecords, GuardStop, fingerprint
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.deadletter import DeadLetter, DeadLetterWriter, event_letter
from worker.ingest.errors import DeadLetterError, PublishError
from worker.ingest.kafka_config import client_config, position
from worker.ingest.publisher import IngestPublisher, batch_task_id

log = logging.getLogger(__name__)


class AckSource(Protocol):
    """Where the ingest tasks' confirmations come from (Redis lists in production)."""

    def drain(self, partitions: list[int]) -> list[Ack]: ...


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int
    offset: int
    point: Point | None  # None: dead-lettered; it only moves the commit point


@dataclass
class BridgeStats:
    consumed: int = 0
    polls: int = 0
    published_batches: int = 0
    published_events: int = 0
    dead_lettered: int = 0
    confirmed_batches: int = 0
    rewinds: int = 0
    paused: bool = False
    pauses: int = 0
    ceiling: int = 1
    rate_per_s: float = 0.0
    queue_depth: int = 0
    in_flight: int = 0
    oldest_unconfirmed_s: float = 0.0
    committed_upto: dict[int, int] = field(default_factory=dict)
    assigned: int = 0  # partitions this bridge owns now
    dlq_guard_tripped: bool = False
    dlq_ratio: float = 0.0  # invalid share of the guard's window
    dlq_guard_trips: int = 0
    # partition -> high watermark (librdkafka's cached value) - next offset to take; replaced
    # as a whole each step, so the metrics thread reads a consistent dict.
    lag: dict[int, int] = field(default_factory=dict)


def consumer_config(settings: Settings) -> dict[str, Any]:
    return client_config(settings.kafka_bootstrap_servers, timeout_s=settings.connect_timeout_s, extra={
        "group.id": settings.kafka_group_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Every blocking step of the loop is bounded well under this (NOTES: apply_async can block).
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        # Only the partitions that change owner move (see the module docstring); a group
        # cannot mix it with the eager strategies: stop older bridges before starting these.
        "partition.assignment.strategy": "cooperative-sticky",
        "queued.max.messages.kbytes": settings.kafka_prefetch_kbytes,
        "enable.partition.eof": False,
    })


def ceiling_config(settings: Settings) -> CeilingConfig:
    return CeilingConfig(
        target_interval_s=settings.bridge_target_interval_s,
        half_life_s=settings.bridge_rate_half_life_s,
        min_batch=settings.bridge_min_batch,
        max_batch=settings.bridge_max_batch,
        max_age_s=settings.bridge_max_batch_age_s,
        max_bytes=settings.bridge_max_batch_bytes,
        hysteresis=settings.bridge_hysteresis,
        idle_s=settings.bridge_idle_flush_s,
    )


def spans_of(batch: Batch[Entry]) -> dict[int, tuple[int, int]]:
    """partition -> (first, last offset) of a batch's entries."""
    ranges: dict[int, tuple[int, int]] = {}
    for entry in batch.items:
        first, last = ranges.get(entry.partition, (entry.offset, entry.offset))
        ranges[entry.partition] = (min(first, entry.offset), max(last, entry.offset))
    return ranges


class Bridge:
    """One bridge process. ``run()`` returns after ``stop()`` (SIGTERM/SIGINT) and a flush."""

    ACK_POLL_S = 0.2  # how often confirmations are read while some are pending
    GUARD_POLL_S = 1.0  # how often the group's dead-letter-guard record is read

    def __init__(self, settings: Settings, publisher: IngestPublisher, probe: QueueDepthProbe,
                 dead_letters: DeadLetterWriter, acks: AckSource, *,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 consumer: Consumer | None = None, guard_records: GuardRecords | None = None) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self.publisher = publisher
        self.probe = probe
        self.dead_letters = dead_letters
        self.acks = acks
        self.clock = clock
        self.sleep = sleep
        self.consumer = consumer or Consumer(consumer_config(settings))
        self.batcher: Batcher[Entry] = Batcher(CeilingPolicy(ceiling_config(settings)))
        self.tracker = OffsetTracker(settings.bridge_confirm_timeout_s)
        self.backpressure = Backpressure(settings.bridge_queue_high_watermark, settings.bridge_queue_low_watermark,
                                         settings.bridge_max_in_flight, settings.bridge_redis_memory_high_watermark)
        self.backoff = Backoff()
        self.ready: deque[Batch[Entry]] = deque()
        self.pending_letters: list[tuple[int, int, DeadLetter]] = []
        # Offsets already dead-lettered (confirmed): a partition read again after a rewind
        # does not write the same dead letter twice. Pruned below the commit point.
        self.dead_lettered: dict[int, set[int]] = {}
        self.next_offset: dict[int, int] = {}
        self.assignment: set[int] = set()
        self.stats = BridgeStats()
        self.guard = DlqGuard(settings.bridge_max_dlq_ratio, settings.bridge_dlq_min_events)
        self.guard_records = guard_records
        self._guard_settings = fingerprint(settings.bridge_max_dlq_ratio, settings.bridge_dlq_min_events)
        # The reason while the dead-letter guard (ours or another bridge's) holds the
        # partitions; None while consuming. Distinct from backpressure's pause: only an
        # operator lifts it.
        self.guard_stop: str | None = None
        self._guard_unrecorded: GuardStop | None = None  # our trip, not yet in Redis
        self._guard_read_at = float("-inf")
        self._stopping = False
        self._closing = False
        self._paused = False
        self._acks_read_at = float("-inf")
        self._last_report = clock()

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Signal-safe: only sets a flag; the loop flushes and closes."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def run(self) -> BridgeStats:
        self.publisher.declare()
        self._poll_guard(self.clock(), force=True)  # a recorded stop holds from the first assignment
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("bridge started", extra={"topic": self.topic, "group": self.settings.kafka_group_id,
                                          "queue": self.publisher.queue,
                                          "dlq_guard": self._guard_settings if self.guard.enabled else "off"})
        try:
            while not self._stopping:
                self.step()
            self._shutdown()
        finally:
            self._closing = True
            self.consumer.close()  # commits the stored offsets (auto-commit), leaves the group
        log.info("bridge stopped", extra=self._stats_extra())
        return self.stats

    # -- one iteration ---------------------------------------------------------------------
    def step(self) -> None:
        now = self.clock()
        self._read_acks(now)
        self._rewind_overdue(now)
        self._poll_guard(now)
        self._update_pause(now)
        messages = self.consumer.consume(num_messages=500, timeout=self.settings.bridge_poll_timeout_s)
        self.stats.polls += 1
        now = self.clock()
        for i, message in enumerate(messages):
            if self.guard_stop is not None:
                self._leave_in_kafka(messages[i:])
                break
            self._take(message, now)
        if self.guard_stop is not None and not self._paused:
            self._pause()
        self.stats.dlq_ratio = self.guard.ratio()
        self.stats.dlq_guard_tripped = self.guard_stop is not None
        due = self.batcher.due(now)
        if due is not None:
            self.ready.append(due)
        # Publish in the same step a batch became due: no extra poll of latency.
        if not self.backoff.blocked(now):
            self._flush_downstream(gated=True)
        self._update_lag()
        if now - self._last_report >= 30:
            self._last_report = now
            log.info("bridge progress", extra=self._stats_extra())

    def _take(self, message: Message, now: float) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                log.error("kafka error", extra={"error": str(error)})
            return
        partition, offset = position(message)
        self.next_offset[partition] = offset + 1
        self.stats.consumed += 1
        raw = message.value() or b""
        point: Point | None = None
        nbytes = 0
        reason: str | None = None
        try:
            point = decode_event(raw)
            nbytes = point_size(point)
        except InvalidEvent as invalid:
            reason = invalid.reason
        except Exception as error:  # defence in depth: a message must never stop the partition
            log.exception("unexpected error taking a message; dead-lettered", extra={
                "partition": partition, "offset": offset})
            point = None
            reason = f"unexpected {type(error).__name__}: {error}"
        if reason is not None:
            self._dead_letter(message, partition, offset, raw, reason)
        self.ready.extend(self.batcher.add(Entry(partition, offset, point), nbytes, now))
        trip = self.guard.observe(partition, offset, now, reason)
        if trip is not None:
            self._trip(trip)

    def _leave_in_kafka(self, messages: list[Message]) -> None:
        """Messages fetched but not taken (the guard tripped): the next offset to take of
        their partitions is their first, so a resume seeks back to it and the commit point
        never passes them."""
        first: dict[int, int] = {}
        for message in messages:
            if message.error() is None:
                partition, offset = position(message)
                first.setdefault(partition, offset)
        for partition, offset in first.items():
            if partition in self.assignment:
                self.next_offset[partition] = min(self.next_offset.get(partition, offset), offset)

    def _dead_letter(self, message: Message, partition: int, offset: int, raw: bytes, reason: str) -> None:
        if offset in self.dead_lettered.get(partition, ()):
            return  # read again after a rewind: its dead letter is already written
        origin = f"{message.topic()}/{partition}@{offset}"
        self.pending_letters.append((partition, offset, event_letter(raw, reason, source="bridge", origin=origin)))

    # -- downstream: dead letters first, then batches, in order ------------------------------
    def _flush_downstream(self, *, gated: bool = False, deadline: float | None = None) -> bool:
        """Write pending dead letters, then publish ready batches in order (unless backpressure
        holds them: then they wait, and so does everything behind them); False on a failure.
        With a ``deadline``, no attempt starts that could outlast it."""
        try:
            if self.pending_letters and self._time_for(deadline, self.dead_letters.timeout_s):
                self.dead_letters.write([letter for _, _, letter in self.pending_letters])
                for partition, offset, _ in self.pending_letters:
                    self.dead_lettered.setdefault(partition, set()).add(offset)
                self.stats.dead_lettered += len(self.pending_letters)
                self.pending_letters.clear()
            while (self.ready and not self.pending_letters and not (gated and self._held_back())
                   and self._time_for(deadline, self.publisher.worst_case_s)):
                self._publish(self.ready[0])
                self.ready.popleft()
        except (PublishError, DeadLetterError) as error:
            delay = self.backoff.failure(self.clock())
            log.warning("downstream failing, pausing", extra={"error": str(error)[:300], "retry_in_s": delay})
            return False
        self.backoff.success()
        return not self.ready and not self.pending_letters

    def _held_back(self) -> bool:
        """Backpressure, checked before every batch: the depth (cached, counting our own
        publishes) and the batches in flight, so one poll's worth of ready batches cannot
        overshoot either limit."""
        s = self.settings
        return (self.backpressure.paused or self.probe.read().depth >= s.bridge_queue_high_watermark
                or self.tracker.in_flight() >= s.bridge_max_in_flight)

    def _time_for(self, deadline: float | None, worst_case_s: float) -> bool:
        return deadline is None or self.clock() + worst_case_s <= deadline

    def _publish(self, batch: Batch[Entry]) -> None:
        ranges = spans_of(batch)
        points = [entry.point for entry in batch.items if entry.point is not None]
        now = self.clock()
        if points:
            reading = self.probe.read()
            if not reading.binding_ok:
                log.warning("exchange binding missing in Redis, declaring queues again")
                self.publisher.declare()
                self.probe.invalidate()
            flat = [(p, first, last) for p, (first, last) in ranges.items()]
            task_id = batch_task_id(self.topic, flat)
            self.publisher.publish(points, task_id, ack_spec(self.settings.kafka_group_id, self.topic, flat))
            self.probe.note_published()
            self.stats.published_batches += 1
            self.stats.published_events += len(points)
            log.debug("batch published", extra={"task_id": task_id, "events": len(points), "ceiling": batch.ceiling})
        for partition, (first, last) in ranges.items():
            if partition in self.assignment:
                # A batch of dead letters only is confirmed: the dead-letter topic has it.
                self.tracker.track(partition, first, last, now, confirmed=not points)
        self._store_commit_points()

    # -- confirmations and commits --------------------------------------------------------------
    def _read_acks(self, now: float, *, force: bool = False) -> None:
        pending = self.tracker.pending_partitions()
        if not pending or (not force and now - self._acks_read_at < self.ACK_POLL_S):
            return
        self._acks_read_at = now
        try:
            acks = self.acks.drain(sorted(p for p in pending if p in self.assignment))
        except Exception as error:  # Redis down: confirmations wait, the deadline decides
            log.warning("confirmations unreadable", extra={"error": str(error)[:200]})
            return
        for ack in acks:
            if ack.stored:
                self.stats.confirmed_batches += self.tracker.confirm(ack.partition, ack.first, ack.last)
            else:
                self.tracker.alive(ack.partition, ack.first, ack.last, now)
        self._store_commit_points()

    def _store_commit_points(self) -> None:
        points = {p: o for p, o in self.tracker.commit_points().items() if p in self.assignment}
        if not points:
            return
        try:
            self.consumer.store_offsets(offsets=[TopicPartition(self.topic, p, o) for p, o in points.items()])
        except KafkaException as error:
            log.warning("store_offsets failed", extra={"error": str(error)})
            return
        self.stats.committed_upto.update(points)
        for partition, upto in points.items():
            done = self.dead_lettered.get(partition)
            if done:
                self.dead_lettered[partition] = {o for o in done if o >= upto}

    def _rewind_overdue(self, now: float) -> None:
        for partition in self.tracker.overdue(now):
            self.rewind(partition, reason="not confirmed in time")

    def rewind(self, partition: int, *, reason: str) -> None:
        """Read ``partition`` again from its oldest unconfirmed batch."""
        timeout = self.tracker.timeout(partition)
        offset = self.tracker.rewind(partition)
        if offset is None:
            return
        self.stats.rewinds += 1
        self._drop_unpublished({partition})
        self.next_offset[partition] = offset
        log.warning("batch not confirmed as stored; reading the partition again", extra={
            "partition": partition, "offset": offset, "reason": reason, "timeout_s": timeout,
            "next_timeout_s": self.tracker.timeout(partition)})
        if not self._paused:
            try:
                self.consumer.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException as error:
                # The partition has no fetch position yet: pausing and resuming seeks again.
                log.warning("seek failed; will seek on resume", extra={"partition": partition, "error": str(error)})
                self._pause()

    def _update_lag(self) -> None:
        """Consumer lag for the metrics, from the cached high watermark: no broker round trip.

        A partition is left out until the bridge has taken a message from it. While paused
        librdkafka fetches nothing, so the watermark (and the lag) is the last one seen.
        """
        lag: dict[int, int] = {}
        for p in self.assignment:
            if p not in self.next_offset:
                continue
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lag[p] = max(0, high - self.next_offset[p])
        self.stats.lag = lag

    # -- pause / resume -----------------------------------------------------------------------
    def _update_pause(self, now: float) -> None:
        reading = self.probe.read()
        in_flight = self.tracker.in_flight()
        self.stats.queue_depth = reading.depth
        self.stats.in_flight = in_flight
        self.stats.oldest_unconfirmed_s = self.tracker.oldest_unconfirmed_age(now)
        self.backpressure.update(reading.depth, in_flight, reading.memory_ratio)
        # Pausing is not free (librdkafka drops its prefetch), so it is never done per batch.
        want_pause = self.backpressure.paused or self.backoff.blocked(now) or self.guard_stop is not None
        policy = self.batcher.policy
        self.stats.ceiling = policy.ceiling
        self.stats.rate_per_s = policy.rate.rate(now)
        if want_pause and not self._paused:
            self._pause()
        elif not want_pause and self._paused:
            self._resume()

    # -- dead-letter guard ---------------------------------------------------------------------
    def _trip(self, trip: Trip) -> None:
        """Our guard tripped: stop taking messages (the caller leaves the rest of the poll in
        Kafka), say why once, and record the stop for the group, health and restarts."""
        self.guard_stop = trip.describe()
        self.stats.dlq_guard_trips += 1
        self._guard_unrecorded = GuardStop(self.guard_stop, self._guard_settings,
                                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           f"{socket.gethostname()}:{os.getpid()}")
        log.error("dead-letter guard tripped: stopped consuming, Kafka keeps the rest; resume with "
                  "`aggregator bridge resume` or restart with a changed BRIDGE_MAX_DLQ_RATIO", extra={
                      "invalid": trip.invalid, "window": trip.window, "ratio": round(trip.ratio, 3),
                      "max_ratio": trip.max_ratio, "window_s": round(trip.window_s, 1),
                      "reasons": " | ".join(trip.reasons)})
        self._guard_read_at = float("-inf")  # record it in the same step

    def _poll_guard(self, now: float, *, force: bool = False) -> None:
        """Keep the group's stop record and ours in step (about once a second): record our
        trip; adopt another bridge's; resume when an operator removed it; remove one decided
        under other settings (a restart with a changed setting is the operator's decision)."""
        if self.guard_records is None or (not force and now - self._guard_read_at < self.GUARD_POLL_S):
            return
        self._guard_read_at = now
        try:
            if self._guard_unrecorded is not None:
                self.guard_records.write(self._guard_unrecorded)
                self._guard_unrecorded = None
                return
            record = self.guard_records.read()
            if record is not None and self.guard_stop is None:
                if record.settings in (self._guard_settings, ""):  # "": written by hand; honoured
                    self._hold_for(record)
                else:
                    self.guard_records.clear()
                    log.warning("dead-letter guard stop lifted: this bridge runs with other settings", extra={
                        "was": record.settings, "now": self._guard_settings, "reason": record.reason})
            elif record is None and self.guard_stop is not None:
                self._lift()
        except Exception as error:  # Redis down: the stop (or its absence) stays as it is
            log.warning("dead-letter guard record unreadable", extra={"error": str(error)[:200]})

    def _hold_for(self, record: GuardStop) -> None:
        self.guard_stop = record.reason
        log.error("dead-letter guard stop in force: not consuming until `aggregator bridge resume`", extra={
            "reason": record.reason, "since": record.at, "by": record.by})

    def _lift(self) -> None:
        self.guard.reset()
        self.guard_stop = None
        log.warning("dead-letter guard stop lifted by an operator: consuming again")

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.assignment)]

    def _pause(self) -> None:
        self._paused = True
        self.stats.paused = True
        self.stats.pauses += 1
        if self.assignment:
            self.consumer.pause(self._partitions())
        log.info("paused", extra={"depth": self.stats.queue_depth, "in_flight": self.stats.in_flight,
                                  "why": self._pause_why()})

    def _pause_why(self) -> str:
        if not self._paused:
            return ""
        return "dlq_guard" if self.guard_stop is not None else self.backpressure.reason or "downstream failing"

    def _resume(self) -> None:
        self._paused = False
        self.stats.paused = False
        if self.assignment:
            self.consumer.resume(self._partitions())
            for p in sorted(self.assignment):
                if p in self.next_offset:
                    # librdkafka dropped what it had prefetched when we paused.
                    self.consumer.seek(TopicPartition(self.topic, p, self.next_offset[p]))
        log.info("resumed", extra={"depth": self.stats.queue_depth, "in_flight": self.stats.in_flight})

    # -- rebalance --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions added (cooperative: only the change): each starts from its committed
        offset, and is paused at once while the bridge is paused."""
        added = {tp.partition for tp in partitions}
        self.assignment |= added
        self.stats.assigned = len(self.assignment)
        for p in added:  # a partition we get (back) starts from its committed offset
            self.next_offset.pop(p, None)
            self.dead_lettered.pop(p, None)
        if partitions:
            # A newly assigned partition is not paused, and a pause() before the assignment
            # is applied is lost: assign here (the client then does not), then pause.
            consumer.incremental_assign(partitions)
            if self._paused:
                consumer.pause(partitions)
        log.info("partitions assigned", extra={"added": sorted(added), "partitions": sorted(self.assignment),
                                               "paused": self._paused, "why": self._pause_why()})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Hand the partitions over: publish what is held, wait for the confirmations of the
        revoked partitions within ``BRIDGE_REVOKE_DEADLINE_S``, store what is confirmed (the
        client commits it before they move) and let go of the rest, which the new owner reads
        again. At close the shutdown has done this already."""
        revoked = {tp.partition for tp in partitions} & self.assignment
        started = self.clock()
        if revoked and not self._closing:
            self._hand_over(revoked, started + self.settings.bridge_revoke_deadline_s)
        self._store_commit_points()
        unconfirmed = sum(1 for p in self.tracker.pending_partitions() if p in revoked)
        self._release(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(revoked), "took_s": round(self.clock() - started, 2),
                                              "left_unconfirmed": unconfirmed, "remaining": sorted(self.assignment)})

    def _hand_over(self, revoked: set[int], deadline: float) -> None:
        """Publish what is held (dead letters first; as far as backpressure lets: a paused
        bridge publishes nothing more) and wait for the revoked partitions' confirmations,
        every blocking step bounded by the deadline; a failing downstream ends it at once.
        What stays unpublished is not tracked, so it is not waited for: the new owner reads it."""
        drained = self.batcher.drain()
        if drained is not None:
            self.ready.append(drained)
        while self.clock() < deadline:
            if self.backoff.blocked(self.clock()):
                return  # Redis or the dead-letter topic failing: no confirmation will come either
            if self.ready or self.pending_letters:
                self._flush_downstream(gated=True, deadline=deadline)
            self._read_acks(self.clock(), force=True)
            if not revoked & set(self.tracker.pending_partitions()):
                return
            self.sleep(min(self.ACK_POLL_S, max(0.0, deadline - self.clock())))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self._release(lost)
        log.warning("partitions lost", extra={"partitions": sorted(lost)})

    def _release(self, partitions: set[int]) -> None:
        self.tracker.forget(partitions)
        self._drop_unpublished(partitions)
        for p in partitions:
            self.next_offset.pop(p, None)
            self.dead_lettered.pop(p, None)
        self.assignment -= partitions
        self.stats.assigned = len(self.assignment)

    def _drop_unpublished(self, partitions: Iterable[int]) -> None:
        """Drop unpublished work of these partitions: it will be read again from Kafka."""
        gone = set(partitions)
        kept: deque[Batch[Entry]] = deque()
        for batch in self.ready:
            items = [e for e in batch.items if e.partition not in gone]
            if items:
                kept.append(Batch(items, batch.nbytes, batch.started_at, batch.ceiling, batch.last_at))
        self.ready = kept
        current = self.batcher.current
        current.items[:] = [e for e in current.items if e.partition not in gone]
        self.pending_letters = [item for item in self.pending_letters if item[0] not in gone]

    # -- shutdown -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Publish what is held and wait for confirmations, all within the deadline; what is
        not confirmed is not committed (the next owner reads it again)."""
        deadline = self.clock() + self.settings.bridge_shutdown_deadline_s
        drained = self.batcher.drain()
        if drained is not None:
            self.ready.append(drained)
        while self.clock() < deadline:
            now = self.clock()
            if self.ready or self.pending_letters:
                if self.backoff.blocked(now):
                    self.sleep(max(0.0, min(self.backoff.retry_at, deadline) - now))
                    continue
                if not self._flush_downstream(deadline=deadline) and not self.backoff.blocked(self.clock()):
                    break  # nothing failed, but no attempt fits in what is left of the deadline
                continue
            self._read_acks(now, force=True)
            if not self.tracker.in_flight():
                break
            self.sleep(min(self.ACK_POLL_S, max(0.0, deadline - self.clock())))
        self._store_commit_points()
        unconfirmed = self.tracker.in_flight()
        if self.ready or self.pending_letters or unconfirmed:
            log.warning("shutdown deadline reached; what is not confirmed stays in Kafka", extra={
                "unpublished_batches": len(self.ready), "unconfirmed_batches": unconfirmed})

    def _stats_extra(self) -> dict[str, object]:
        s = self.stats
        return {"consumed": s.consumed, "published_events": s.published_events,
                "published_batches": s.published_batches, "confirmed_batches": s.confirmed_batches,
                "dead_lettered": s.dead_lettered, "rewinds": s.rewinds, "paused": s.paused,
                "ceiling": s.ceiling, "rate_per_s": round(s.rate_per_s, 3), "queue_depth": s.queue_depth,
                "in_flight": s.in_flight}
