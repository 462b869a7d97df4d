"""The bridge loop: Kafka consumer group -> batches of points -> Celery ingest tasks.

Order of steps for every message (NOTES, after arroyo): decode/validate -> (invalid: dead
letter) -> add to the batch -> publish the batch -> store the batch's offsets -> librdkafka
commits stored offsets (``enable.auto.offset.store=false`` + auto-commit; synchronous
commits in rebalance callbacks crashed others). Hence at-least-once: an offset is stored
only after the broker took the batch holding it, and a dead-lettered message only after
its dead letter was confirmed.

Backpressure: while the ingest queue is deeper than the high watermark (or Redis / the
dead-letter topic is failing) the bridge pauses its partitions and keeps polling; Kafka
holds the data. It resumes below the low watermark, seeking each partition to the next
offset it has not yet taken, because librdkafka purges prefetched messages on pause.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.bridge.ceiling import Batch, Batcher, CeilingConfig, CeilingPolicy
from worker.bridge.depth import QueueDepthProbe
from worker.bridge.publisher import IngestPublisher, PublishError, batch_task_id
from worker.deadletter import DeadLetter, DeadLetterError, DeadLetterWriter, event_letter
from worker.events import InvalidEvent, Point, decode_event, point_size
from worker.kafka_config import client_config, position
from worker.settings import Settings

log = logging.getLogger(__name__)


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
    paused: bool = False
    pauses: int = 0
    ceiling: int = 1
    rate_per_s: float = 0.0
    queue_depth: int = 0
    committed_upto: dict[int, int] = field(default_factory=dict)
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
        # Publishing retries are bounded well under this (NOTES: apply_async can block).
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
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
    )


class Bridge:
    """One bridge process. ``run()`` returns after ``stop()`` (SIGTERM/SIGINT) and a flush."""

    def __init__(self, settings: Settings, publisher: IngestPublisher, probe: QueueDepthProbe,
                 dead_letters: DeadLetterWriter, *, clock: Callable[[], float] = time.monotonic,
                 consumer: Consumer | None = None) -> None:
        self.settings = settings
        self.topic = settings.kafka_topic
        self.publisher = publisher
        self.probe = probe
        self.dead_letters = dead_letters
        self.clock = clock
        self.consumer = consumer or Consumer(consumer_config(settings))
        self.batcher: Batcher[Entry] = Batcher(CeilingPolicy(ceiling_config(settings)))
        self.ready: deque[Batch[Entry]] = deque()
        self.pending_letters: list[tuple[int, DeadLetter]] = []
        self.next_offset: dict[int, int] = {}
        self.assignment: set[int] = set()
        self.stats = BridgeStats()
        self._stopping = False
        self._backpressure = False
        self._blocked_until = 0.0
        self._failures = 0
        self._paused = False
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
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("bridge started", extra={"topic": self.topic, "group": self.settings.kafka_group_id,
                                          "queue": self.publisher.queue})
        try:
            while not self._stopping:
                self.step()
            self._shutdown()
        finally:
            self.consumer.close()  # commits the stored offsets (auto-commit), leaves the group
        log.info("bridge stopped", extra=self._stats_extra())
        return self.stats

    # -- one iteration ---------------------------------------------------------------------
    def step(self) -> None:
        now = self.clock()
        if now >= self._blocked_until:
            self._flush_downstream(gated=True)
        self._update_pause(now)
        messages = self.consumer.consume(num_messages=500, timeout=self.settings.bridge_poll_timeout_s)
        self.stats.polls += 1
        now = self.clock()
        for message in messages:
            self._take(message, now)
        due = self.batcher.due(now)
        if due is not None:
            self.ready.append(due)
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
        point: Point | None
        try:
            decoded = decode_event(raw)
        except InvalidEvent as invalid:
            point, nbytes = None, 0
            origin = f"{message.topic()}/{partition}@{offset}"
            self.pending_letters.append((partition, event_letter(raw, invalid.reason, source="bridge",
                                                                 origin=origin)))
        else:
            point, nbytes = decoded, point_size(decoded)
        self.ready.extend(self.batcher.add(Entry(partition, offset, point), nbytes, now))

    # -- downstream: dead letters first, then batches, in order ------------------------------
    def _over_high_watermark(self) -> bool:
        return self.probe.read().depth >= self.settings.bridge_queue_high_watermark

    def _flush_downstream(self, *, gated: bool = False) -> bool:
        """Write pending dead letters, then publish ready batches in order (unless the queue
        is too deep: then they wait, and so does everything behind them); False on a failure.
        """
        try:
            if self.pending_letters:
                self.dead_letters.write([letter for _, letter in self.pending_letters])
                self.stats.dead_lettered += len(self.pending_letters)
                self.pending_letters.clear()
            while self.ready and not (gated and self._over_high_watermark()):
                self._publish(self.ready[0])
                self.ready.popleft()
        except (PublishError, DeadLetterError) as error:
            self._failures += 1
            backoff = min(30.0, 0.5 * 2 ** min(self._failures, 6))
            self._blocked_until = self.clock() + backoff
            log.warning("downstream failing, pausing", extra={"error": str(error)[:300],
                                                              "retry_in_s": backoff})
            return False
        self._failures = 0
        self._blocked_until = 0.0
        return True

    def _publish(self, batch: Batch[Entry]) -> None:
        ranges: dict[int, tuple[int, int]] = {}
        for entry in batch.items:
            first, last = ranges.get(entry.partition, (entry.offset, entry.offset))
            ranges[entry.partition] = (min(first, entry.offset), max(last, entry.offset))
        points = [entry.point for entry in batch.items if entry.point is not None]
        if points:
            reading = self.probe.read()
            if not reading.binding_ok:
                log.warning("exchange binding missing in Redis, declaring queues again")
                self.publisher.declare()
                self.probe.invalidate()
            task_id = batch_task_id(self.topic, [(p, a, b) for p, (a, b) in ranges.items()])
            self.publisher.publish(points, task_id)
            self.probe.note_published()
            self.stats.published_batches += 1
            self.stats.published_events += len(points)
            log.debug("batch published", extra={"task_id": task_id, "events": len(points),
                                                "ceiling": batch.ceiling})
        self._store_offsets({p: last + 1 for p, (_, last) in ranges.items()})

    def _store_offsets(self, upto: dict[int, int]) -> None:
        owned = {p: o for p, o in upto.items() if p in self.assignment}
        if not owned:
            return
        try:
            self.consumer.store_offsets(offsets=[TopicPartition(self.topic, p, o) for p, o in owned.items()])
            self.stats.committed_upto.update(owned)
        except KafkaException as error:
            log.warning("store_offsets failed", extra={"error": str(error)})

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
        self.stats.queue_depth = reading.depth
        s = self.settings
        if reading.depth >= s.bridge_queue_high_watermark:
            self._backpressure = True
        elif reading.depth <= s.bridge_queue_low_watermark:
            self._backpressure = False
        # Ready batches held back by backpressure are covered by the watermark itself; only a
        # failing downstream blocks on its own. Pausing is not free (librdkafka drops its
        # prefetch), so it is never done per batch.
        want_pause = self._backpressure or now < self._blocked_until
        policy = self.batcher.policy
        self.stats.ceiling = policy.ceiling
        self.stats.rate_per_s = policy.rate.rate(now)
        if want_pause and not self._paused:
            self._pause()
        elif not want_pause and self._paused:
            self._resume()

    def _partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p) for p in sorted(self.assignment)]

    def _pause(self) -> None:
        self._paused = True
        self.stats.paused = True
        self.stats.pauses += 1
        if self.assignment:
            self.consumer.pause(self._partitions())
        log.info("paused", extra={"depth": self.stats.queue_depth, "backpressure": self._backpressure})

    def _resume(self) -> None:
        self._paused = False
        self.stats.paused = False
        if self.assignment:
            self.consumer.resume(self._partitions())
            for p in sorted(self.assignment):
                if p in self.next_offset:
                    # librdkafka dropped what it had prefetched when we paused.
                    self.consumer.seek(TopicPartition(self.topic, p, self.next_offset[p]))
        log.info("resumed", extra={"depth": self.stats.queue_depth})

    # -- rebalance --------------------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assignment = {tp.partition for tp in partitions}
        if self._paused and partitions:
            # A newly assigned partition is not paused, and a pause() before the assignment
            # is applied is lost (the client's own assign() after this callback resets it):
            # assign here, then pause.
            consumer.assign(partitions)
            consumer.pause(partitions)
        log.info("partitions assigned", extra={"partitions": sorted(self.assignment), "paused": self._paused})

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {tp.partition for tp in partitions}
        drained = self.batcher.drain()
        if drained is not None:
            self.ready.append(drained)
        # One attempt to publish and store what we hold before losing the partitions, unless
        # the queue is too deep: then the next owner re-reads it from the committed offset.
        self._flush_downstream(gated=True)
        self._forget(revoked)
        self.assignment -= revoked
        log.info("partitions revoked", extra={"partitions": sorted(revoked)})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self._forget(lost)
        self.assignment -= lost
        log.warning("partitions lost", extra={"partitions": sorted(lost)})

    def _forget(self, partitions: set[int]) -> None:
        """Drop unpublished work of partitions we no longer own: their next owner re-reads it."""
        kept: deque[Batch[Entry]] = deque()
        for batch in self.ready:
            items = [e for e in batch.items if e.partition not in partitions]
            if items:
                kept.append(Batch(items, batch.nbytes, batch.started_at, batch.ceiling))
        self.ready = kept
        current = self.batcher.current
        current.items[:] = [e for e in current.items if e.partition not in partitions]
        self.pending_letters = [(p, letter) for p, letter in self.pending_letters if p not in partitions]
        for p in partitions:
            self.next_offset.pop(p, None)

    # -- shutdown -------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Flush everything within the deadline; what is not published is not committed."""
        drained = self.batcher.drain()
        if drained is not None:
            self.ready.append(drained)
        deadline = self.clock() + self.settings.bridge_shutdown_deadline_s
        while self.ready or self.pending_letters:
            if self._flush_downstream():
                break
            if self.clock() >= deadline:
                log.error("shutdown deadline reached; unpublished events stay in Kafka",
                          extra={"batches": len(self.ready)})
                break
            # Backoff between two attempts at a failing broker: nothing to await but time.
            time.sleep(max(0.0, min(self._blocked_until, deadline) - self.clock()))

    def _stats_extra(self) -> dict[str, object]:
        s = self.stats
        return {"consumed": s.consumed, "published_events": s.published_events,
                "published_batches": s.published_batches, "dead_lettered": s.dead_lettered,
                "paused": s.paused, "ceiling": s.ceiling, "rate_per_s": round(s.rate_per_s, 3),
                "queue_depth": s.queue_depth}
