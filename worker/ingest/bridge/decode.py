"""Decode and validate, the bridge's first step: any bytes in, a point or a dead letter out
(an unexpected exception too, with itself as the reason): no message can stop a partition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, Message

from worker.core.events import InvalidEvent, Point, decode_event, point_size
from worker.ingest.deadletter import DeadLetter, event_letter
from worker.ingest.kafka_config import position

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Entry:
    partition: int
    offset: int
    point: Point | None  # None: dead-lettered; it only moves the commit point


@dataclass(frozen=True, slots=True)
class Taken:
    entry: Entry
    nbytes: int
    letter: DeadLetter | None  # the dead letter of an invalid message

    @property
    def reason(self) -> str | None:
        return None if self.letter is None else self.letter.reason


def decode(message: Message) -> Taken | None:
    """The message as an entry of a batch; None for an error event of the client."""
    error = message.error()
    if error is not None:
        if error.code() != KafkaError._PARTITION_EOF:
            log.error("kafka error", extra={"error": str(error)})
        return None
    partition, offset = position(message)
    raw = message.value() or b""
    try:
        point = decode_event(raw)
        return Taken(Entry(partition, offset, point), point_size(point), None)
    except InvalidEvent as invalid:
        reason = invalid.reason
    except Exception as error:
        log.exception("unexpected error taking a message; dead-lettered", extra={
            "partition": partition, "offset": offset})
        reason = f"unexpected {type(error).__name__}: {error}"
    origin = f"{message.topic()}/{partition}@{offset}"
    return Taken(Entry(partition, offset, None), 0, event_letter(raw, reason, source="bridge", origin=origin))
