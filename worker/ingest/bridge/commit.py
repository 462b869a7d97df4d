"""Confirm and commit: an offset is stored for commit only once the event store holds
everything before it. Offsets are stored for librdkafka's auto-commit: synchronous commits
in rebalance callbacks crashed the other bridges of a group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from worker.ingest.acks import Ack
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.bridge.state import BridgeStats, Partitions

log = logging.getLogger(__name__)


def log_refused_commit(error: KafkaError | None, partitions: list[TopicPartition]) -> None:
    """librdkafka's ``on_commit``: a commit the broker refused (a rebalance that fenced this
    member, the coordinator moving) leaves the partitions' committed offsets behind, so their
    next owner reads those events again and publishes them once more (the store writes them
    once). Nothing stored to commit is not a refusal."""
    refused = [tp for tp in partitions if tp.error is not None]
    if refused:
        error, partitions = refused[0].error, refused
    elif error is None or error.code() == KafkaError._NO_OFFSET:
        return
    log.warning("offset commit refused: the next owner reads these partitions' events since their last commit again",
                extra={"error": str(error), "partitions": sorted(tp.partition for tp in partitions)})


class AckSource(Protocol):
    """Where the ingest tasks' confirmations come from (Redis lists in production)."""

    def drain(self, partitions: list[int]) -> list[Ack]: ...


@dataclass
class Commit:
    POLL_S: ClassVar[float] = 0.2  # how often confirmations are read while some are pending

    consumer: Consumer
    tracker: OffsetTracker
    acks: AckSource
    partitions: Partitions
    stats: BridgeStats
    _read_at: float = field(default=float("-inf"), init=False)

    def read_acks(self, now: float, *, force: bool = False) -> None:
        """Confirm what the store holds (or note a sign of life), then store the points."""
        pending = self.tracker.pending_partitions()
        if not pending or (not force and now - self._read_at < self.POLL_S):
            return
        self._read_at = now
        try:
            acks = self.acks.drain(sorted(p for p in pending if p in self.partitions.owned))
        except Exception as error:  # Redis down: confirmations wait, the deadline decides
            log.warning("confirmations unreadable", extra={"error": str(error)[:200]})
            return
        for ack in acks:
            if ack.stored:
                self.stats.confirmed_batches += self.tracker.confirm(ack.partition, ack.first, ack.last)
            else:
                self.tracker.alive(ack.partition, ack.first, ack.last, now)
        self.store()

    def store(self) -> None:
        points = {p: o for p, o in self.tracker.commit_points().items() if p in self.partitions.owned}
        if not points:
            return
        topic = self.partitions.topic
        try:
            self.consumer.store_offsets(offsets=[TopicPartition(topic, p, o) for p, o in points.items()])
        except KafkaException as error:
            log.warning("store_offsets failed", extra={"error": str(error)})
            return
        self.stats.committed_upto.update(points)

    def waiting(self, partitions: set[int]) -> bool:
        return not partitions.isdisjoint(self.tracker.pending_partitions())
