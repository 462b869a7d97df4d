"""The bridge loop: Kafka consumer group -> batches of points -> Celery ingest tasks.

The loop drives small steps, one job each: decode, pause, batch (ceiling), publish, commit;
:func:`worker.celeryapp.resources.compose_bridge` builds them. Rebalance and SIGTERM both
drain within a deadline; what is not confirmed is not committed and is read again
(docs/operating.md, "Several bridges", "Stopping and restarting").
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import FrameType

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from worker.ingest.bridge.ceiling import Batcher
from worker.ingest.bridge.commit import Commit
from worker.ingest.bridge.decode import Entry, decode
from worker.ingest.bridge.guard_state import GuardSync
from worker.ingest.bridge.pause import Pause
from worker.ingest.bridge.publish import Publish
from worker.ingest.bridge.state import BridgeStats, Partitions
from worker.ingest.kafka_config import position

log = logging.getLogger(__name__)


@dataclass
class Bridge:
    """One bridge process. ``run()`` returns after ``stop()`` (SIGTERM/SIGINT) and a drain."""

    consumer: Consumer
    partitions: Partitions
    batcher: Batcher[Entry]
    publish: Publish
    commit: Commit
    pause: Pause
    guard: GuardSync
    stats: BridgeStats
    group: str
    poll_timeout_s: float
    revoke_deadline_s: float
    shutdown_deadline_s: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _stopping: bool = field(default=False, init=False)
    _closing: bool = field(default=False, init=False)
    _reported_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._reported_at = self.clock()

    @property
    def topic(self) -> str:
        return self.partitions.topic

    def stop(self, *_: object) -> None:
        """Signal-safe: only sets a flag; the loop drains and closes."""
        self._stopping = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("stop requested", extra={"signal": signal.Signals(signum).name})
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self.pause.assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def run(self) -> BridgeStats:
        self.publish.publisher.declare()
        self.guard.poll(self.clock(), force=True)  # a recorded stop holds from the first assignment
        self.subscribe()
        log.info("bridge started", extra={"topic": self.topic, "group": self.group,
                                          "queue": self.publish.publisher.queue,
                                          "dlq_guard": self.guard.settings if self.guard.guard.enabled else "off"})
        try:
            while not self._stopping:
                self.step()
            self._shutdown()
        finally:
            self._closing = True
            self.consumer.close()  # commits the stored offsets (auto-commit), leaves the group
        log.info("bridge stopped", extra=self._stats_extra())
        return self.stats

    def step(self) -> None:
        now = self.clock()
        self.commit.read_acks(now)
        self._rewind_overdue(now)
        self.guard.poll(now)
        self.pause.update(now, blocked=self.publish.backoff.blocked(now))
        messages = self.consumer.consume(num_messages=500, timeout=self.poll_timeout_s)
        self.stats.polls += 1
        now = self.clock()
        for i, message in enumerate(messages):
            if self.guard.stop is not None:
                self._leave_in_kafka(messages[i:])
                break
            self._take(message, now)
        if self.guard.stop is not None and not self.pause.paused:
            self.pause.pause()
        self.publish.hold([self.batcher.due(now)])
        if not self.publish.backoff.blocked(now):
            self.publish.flush(gated=True)
        self.commit.store()
        self._update_stats(now)

    def _take(self, message: Message, now: float) -> None:
        taken = decode(message)
        if taken is None:
            return
        entry = taken.entry
        self.partitions.next_offset[entry.partition] = entry.offset + 1
        self.stats.consumed += 1
        if taken.letter is not None:
            self.publish.letter(entry, taken.letter)
        self.publish.hold(self.batcher.add(entry, taken.nbytes, now))
        self.guard.observe(entry.partition, entry.offset, now, taken.reason)

    def _leave_in_kafka(self, messages: list[Message]) -> None:
        """Messages fetched but not taken (the guard tripped): a resume seeks back to them."""
        next_offset = self.partitions.next_offset
        for message in messages:
            if message.error() is None:
                partition, offset = position(message)
                if partition in self.partitions.owned:
                    next_offset[partition] = min(next_offset.get(partition, offset), offset)

    def _rewind_overdue(self, now: float) -> None:
        """Read a partition again from its oldest batch not confirmed in time."""
        tracker = self.commit.tracker
        for partition, offset in tracker.overdue(now).items():
            timeout = tracker.timeout(partition)
            tracker.rewind(partition)
            self.stats.rewinds += 1
            self._drop_unpublished({partition})
            self.partitions.next_offset[partition] = offset
            log.warning("batch not confirmed as stored; reading the partition again", extra={
                "partition": partition, "offset": offset, "reason": "not confirmed in time", "timeout_s": timeout,
                "next_timeout_s": tracker.timeout(partition)})
            self.pause.seek(partition, offset)

    def _drop_unpublished(self, partitions: set[int]) -> None:
        current = self.batcher.current
        current.items[:] = [e for e in current.items if e.partition not in partitions]
        self.publish.drop(partitions)

    def _update_stats(self, now: float) -> None:
        """The numbers the metrics read; the lag from the cached high watermark (no round trip)."""
        s = self.stats
        s.dlq_ratio = self.guard.guard.ratio()
        s.dlq_guard_tripped = self.guard.stop is not None
        s.ceiling = self.batcher.policy.ceiling
        s.rate_per_s = self.batcher.policy.rate.rate(now)
        lag: dict[int, int] = {}
        for p, taken_upto in self.partitions.next_offset.items():
            try:
                _, high = self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            except KafkaException:
                continue
            if high >= 0:
                lag[p] = max(0, high - taken_upto)
        s.lag = lag
        if now - self._reported_at >= 30:
            self._reported_at = now
            log.info("bridge progress", extra=self._stats_extra())

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Drain, store what is confirmed (the client commits it before the partitions move),
        drop the rest. At close the shutdown has drained already."""
        revoked = {tp.partition for tp in partitions} & self.partitions.owned
        started = self.clock()
        if revoked and not self._closing:
            self._drain(started + self.revoke_deadline_s, revoked, hand_over=True)
        self.commit.store()
        unconfirmed = sum(1 for p in self.commit.tracker.pending_partitions() if p in revoked)
        self._release(revoked)
        log.info("partitions revoked", extra={"partitions": sorted(revoked), "took_s": round(self.clock() - started, 2),
                                              "left_unconfirmed": unconfirmed,
                                              "remaining": sorted(self.partitions.owned)})

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {tp.partition for tp in partitions}
        self._release(lost)
        log.warning("partitions lost", extra={"partitions": sorted(lost)})

    def _release(self, partitions: set[int]) -> None:
        self.commit.tracker.forget(partitions)
        self._drop_unpublished(partitions)
        self.publish.release(partitions)
        for p in partitions:
            self.partitions.next_offset.pop(p, None)
        self.partitions.owned -= partitions
        self.stats.assigned = len(self.partitions.owned)

    def _shutdown(self) -> None:
        self._drain(self.clock() + self.shutdown_deadline_s, self.partitions.owned, hand_over=False)
        self.commit.store()
        unconfirmed = self.commit.tracker.in_flight()
        if self.publish.pending or unconfirmed:
            log.warning("shutdown deadline reached; what is not confirmed stays in Kafka", extra={
                "unpublished_batches": len(self.publish.ready), "unconfirmed_batches": unconfirmed})

    def _drain(self, deadline: float, partitions: set[int], *, hand_over: bool) -> None:
        """Publish what is held, then wait until ``partitions`` have nothing unconfirmed."""
        publish = self.publish
        publish.hold([self.batcher.drain()])
        while (now := self.clock()) < deadline:
            blocked = publish.backoff.blocked(now)
            if hand_over and blocked:
                return  # Redis or the dead-letter topic failing: no confirmation will come either
            if publish.pending:
                if blocked:
                    self.sleep(max(0.0, min(publish.backoff.retry_at, deadline) - now))
                    continue
                flushed = publish.flush(gated=hand_over, deadline=deadline)
                if not hand_over:
                    if not flushed and not publish.backoff.blocked(self.clock()):
                        return  # nothing failed, but no attempt fits in what is left of the deadline
                    continue
            self.commit.read_acks(self.clock(), force=True)
            if not self.commit.waiting(partitions):
                return
            self.sleep(min(self.commit.POLL_S, max(0.0, deadline - self.clock())))

    def _stats_extra(self) -> dict[str, object]:
        return {name: value for name, value in asdict(self.stats).items() if not isinstance(value, dict)}
