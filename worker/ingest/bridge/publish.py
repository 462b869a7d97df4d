"""Publish: dead letters first, then the batches, in order, as far as backpressure lets; a
batch waits until the dead letters taken before it are confirmed, so no offset is stored past
an invalid event missing from the dead letters. Failures are retried under ``Backoff``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from worker.ingest.acks import ack_spec
from worker.ingest.bridge.ceiling import Batch
from worker.ingest.bridge.decode import Entry
from worker.ingest.bridge.depth import QueueDepthProbe
from worker.ingest.bridge.flow import Backoff, Backpressure
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.bridge.state import BridgeStats, Partitions
from worker.ingest.deadletter import DeadLetter, DeadLetterWriter
from worker.ingest.errors import DeadLetterError, PublishError
from worker.ingest.publisher import IngestPublisher, batch_task_id

log = logging.getLogger(__name__)


@dataclass
class Publish:
    publisher: IngestPublisher
    dead_letters: DeadLetterWriter
    probe: QueueDepthProbe
    tracker: OffsetTracker
    backpressure: Backpressure
    partitions: Partitions
    stats: BridgeStats
    group: str
    clock: Callable[[], float]
    backoff: Backoff = field(default_factory=Backoff, init=False)
    ready: deque[Batch[Entry]] = field(default_factory=deque, init=False)
    letters: list[tuple[Entry, DeadLetter]] = field(default_factory=list, init=False)
    # partition -> offset after the last dead letter written: a rewind does not write it twice.
    _written: dict[int, int] = field(default_factory=dict, init=False)

    @property
    def pending(self) -> bool:
        return bool(self.ready or self.letters)

    def letter(self, entry: Entry, letter: DeadLetter) -> None:
        if entry.offset >= self._written.get(entry.partition, 0):
            self.letters.append((entry, letter))

    def hold(self, batches: Iterable[Batch[Entry] | None]) -> None:
        self.ready.extend(batch for batch in batches if batch is not None)

    def flush(self, *, gated: bool = False, deadline: float | None = None) -> bool:
        """Write pending dead letters, then publish ready batches in order while backpressure
        lets; False on a failure. No attempt starts that could outlast ``deadline``."""
        try:
            if self.letters and self._time_for(deadline, self.dead_letters.timeout_s):
                self.dead_letters.write([letter for _, letter in self.letters])
                for entry, _ in self.letters:
                    self._written[entry.partition] = entry.offset + 1
                self.stats.dead_lettered += len(self.letters)
                self.letters.clear()
            while (self.ready and not self.letters and not (gated and self._held_back())
                   and self._time_for(deadline, self.publisher.worst_case_s)):
                self._publish(self.ready[0])
                self.ready.popleft()
        except (PublishError, DeadLetterError) as error:
            delay = self.backoff.failure(self.clock())
            log.warning("downstream failing, pausing", extra={"error": str(error)[:300], "retry_in_s": delay})
            return False
        self.backoff.success()
        return not self.pending

    def _held_back(self) -> bool:
        """Backpressure, checked before every batch so one poll's batches cannot overshoot it."""
        limits = self.backpressure
        return (limits.paused or self.probe.read().depth >= limits.high_watermark
                or self.tracker.in_flight() >= limits.max_in_flight)

    def _time_for(self, deadline: float | None, worst_case_s: float) -> bool:
        return deadline is None or self.clock() + worst_case_s <= deadline

    def _publish(self, batch: Batch[Entry]) -> None:
        ranges: dict[int, tuple[int, int]] = {}  # partition -> (first, last offset)
        for entry in batch.items:
            first, last = ranges.get(entry.partition, (entry.offset, entry.offset))
            ranges[entry.partition] = (min(first, entry.offset), max(last, entry.offset))
        points = [entry.point for entry in batch.items if entry.point is not None]
        now = self.clock()
        if points:
            if not self.probe.read().binding_ok:
                log.warning("exchange binding missing in Redis, declaring queues again")
                self.publisher.declare()
                self.probe.invalidate()
            flat = [(p, first, last) for p, (first, last) in ranges.items()]
            topic = self.partitions.topic
            task_id = batch_task_id(topic, flat)
            self.publisher.publish(points, task_id, ack_spec(self.group, topic, flat))
            self.probe.note_published()
            self.stats.published_batches += 1
            self.stats.published_events += len(points)
            log.debug("batch published", extra={"task_id": task_id, "events": len(points), "ceiling": batch.ceiling})
        for partition, (first, last) in ranges.items():
            if partition in self.partitions.owned:
                self.tracker.track(partition, first, last, now, confirmed=not points)

    def drop(self, partitions: set[int]) -> None:
        """Drop unpublished work of these partitions: it will be read again from Kafka."""
        for batch in self.ready:
            batch.items[:] = [e for e in batch.items if e.partition not in partitions]
        self.ready = deque(batch for batch in self.ready if batch.items)
        self.letters = [item for item in self.letters if item[0].partition not in partitions]

    def release(self, partitions: set[int]) -> None:
        """Partitions handed over (their work dropped already): the next owner writes their letters."""
        for p in partitions:
            self._written.pop(p, None)
