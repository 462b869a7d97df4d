"""Pause: the partitions are held (the bridge keeps polling, Kafka holds the data) while
backpressure, a failing downstream or the dead-letter guard's stop says so. Never per batch:
librdkafka drops its prefetch, so a resume seeks each partition to the next offset not taken.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaException, TopicPartition

from worker.ingest.bridge.depth import QueueDepthProbe
from worker.ingest.bridge.flow import Backpressure
from worker.ingest.bridge.guard_state import GuardSync
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.bridge.state import BridgeStats, Partitions

log = logging.getLogger(__name__)


@dataclass
class Pause:
    consumer: Consumer
    partitions: Partitions
    probe: QueueDepthProbe
    tracker: OffsetTracker
    backpressure: Backpressure
    guard: GuardSync
    stats: BridgeStats
    paused: bool = field(default=False, init=False)

    def update(self, now: float, *, blocked: bool) -> None:
        """Pause or resume; ``blocked``: downstream failing."""
        s = self.stats
        reading = self.probe.read()
        s.queue_depth = reading.depth
        s.in_flight = self.tracker.in_flight()
        s.oldest_unconfirmed_s = self.tracker.oldest_unconfirmed_age(now)
        self.backpressure.update(s.queue_depth, s.in_flight, reading.memory_ratio)
        want_pause = self.backpressure.paused or blocked or self.guard.stop is not None
        if want_pause and not self.paused:
            self.pause()
        elif not want_pause and self.paused:
            self.resume()

    def _owned(self) -> list[TopicPartition]:
        return [TopicPartition(self.partitions.topic, p) for p in sorted(self.partitions.owned)]

    def pause(self) -> None:
        self.paused = True
        self.stats.paused = True
        self.stats.pauses += 1
        if self.partitions.owned:
            self.consumer.pause(self._owned())
        log.info("paused", extra={"depth": self.stats.queue_depth, "in_flight": self.stats.in_flight,
                                  "why": self.why()})

    def why(self) -> str:
        if not self.paused:
            return ""
        return "dlq_guard" if self.guard.stop is not None else self.backpressure.reason or "downstream failing"

    def resume(self) -> None:
        self.paused = False
        self.stats.paused = False
        if self.partitions.owned:
            self.consumer.resume(self._owned())
            for p in sorted(self.partitions.owned):
                if p in self.partitions.next_offset:
                    self.consumer.seek(TopicPartition(self.partitions.topic, p, self.partitions.next_offset[p]))
        log.info("resumed", extra={"depth": self.stats.queue_depth, "in_flight": self.stats.in_flight})

    def seek(self, partition: int, offset: int) -> None:
        """Read ``partition`` from ``offset`` (at the resume when paused)."""
        if self.paused:
            return
        try:
            self.consumer.seek(TopicPartition(self.partitions.topic, partition, offset))
        except KafkaException as error:
            # No fetch position yet: pausing and resuming seeks again.
            log.warning("seek failed; will seek on resume", extra={"partition": partition, "error": str(error)})
            self.pause()

    def assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions added (cooperative: only the change); each starts from its committed offset."""
        added = {tp.partition for tp in partitions}
        self.partitions.owned |= added
        self.stats.assigned = len(self.partitions.owned)
        if partitions:
            # A newly assigned partition is not paused, and a pause() before the assignment
            # is applied is lost: assign here (the client then does not), then pause.
            consumer.incremental_assign(partitions)
            if self.paused:
                consumer.pause(partitions)
        log.info("partitions assigned", extra={"added": sorted(added), "partitions": sorted(self.partitions.owned),
                                               "paused": self.paused, "why": self.why()})
