"""Replaying dead letters: ``aggregator dlq replay``.

Events are validated again (a fixed upstream bug or a relaxed rule makes them valid);
still-invalid events are dead-lettered again with the new reason and attempt + 1, so the
replay cursor can move past them without losing them. Batches (store outages) are
re-published as ingest tasks. The cursor (a consumer-group offset) moves only after
everything read has been published or re-dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from worker.core.events import InvalidEvent, Point, decode_event, points_from_wire
from worker.ingest.deadletter import DeadLetterReader, DeadLetterWriter, batch_letter, event_letter
from worker.ingest.publisher import IngestPublisher

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    read: int = 0
    events_replayed: int = 0
    batches_replayed: int = 0
    still_invalid: int = 0
    unreadable: int = 0


def replay(reader: DeadLetterReader, writer: DeadLetterWriter, publisher: IngestPublisher,
           *, batch_size: int = 1000, on_letter: Callable[[], object] | None = None) -> ReplayReport:
    """Replay every pending letter; ``on_letter`` hears of each one read (progress)."""
    report = ReplayReport()
    positions: list[TopicPartition] = []
    points: list[Point] = []
    redead = []
    publisher.declare()

    def flush() -> None:
        if points:
            first, last = points[0].event_id, points[-1].event_id
            publisher.publish(list(points), f"replay:{first}:{last}:{len(points)}")
            report.events_replayed += len(points)
            points.clear()

    for position, letter in reader.read(pending_only=True):
        report.read += 1
        if on_letter is not None:
            on_letter()
        positions.append(position)
        if letter is None:
            report.unreadable += 1
            log.error("unreadable dead letter skipped", extra={"position": str(position)})
            continue
        if letter.kind == "batch":
            kept = letter.points if letter.points is not None else letter.payload_text or ""
            try:
                batch = points_from_wire(kept)
            except InvalidEvent as error:
                # A corrupted batch stays a dead letter (attempt + 1) instead of stopping
                # the replay of everything behind it.
                report.still_invalid += 1
                redead.append(batch_letter(kept, error.reason, source="replay", attempt=letter.attempt + 1))
                continue
            publisher.publish(batch, f"replay:{position.topic}:{position.partition}:{position.offset - 1}")
            report.batches_replayed += 1
            report.events_replayed += len(batch)
            continue
        try:
            points.append(decode_event(letter.raw()))
        except InvalidEvent as error:
            report.still_invalid += 1
            redead.append(event_letter(letter.raw(), error.reason, source="replay", origin=letter.origin,
                                       attempt=letter.attempt + 1))
        if len(points) >= batch_size:
            flush()
    flush()
    writer.write(redead)
    reader.commit(positions)
    log.info("replay done", extra=vars(report))
    return report
