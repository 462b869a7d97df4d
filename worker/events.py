"""Processed discussion events: decoding, validation and the compact point (SPEC §2).

Each Kafka message is decoded exactly once, in the bridge; from there on only the compact
:class:`Point` travels (through Redis, into the store), never the raw 1–2 KB event. msgspec
decodes and type-checks in one pass and reports the JSON path of the first bad field, which
becomes the dead-letter reason an operator reads.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import msgspec

# Field order of a Point on the wire and in the stores; `count` (always 1) is implicit.
POINT_FIELDS: tuple[str, ...] = (
    "score",
    "sentiment_raw",
    "followers",
    "length",
    "questions",
    "exclamations",
    "bot_rating",
    "contains_abstract_raw",
    "time_score",
    "type_factor",
    "user_score",
    "content_score",
)


class InvalidEvent(ValueError):
    """An event that cannot be stored; ``reason`` is meant for the dead-letter listing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the wire format of the upstream event (only what we read; extra fields are ignored) --


class _Processed(msgspec.Struct):
    score: float
    sentiment_raw: float
    followers: int
    length: int
    question_mark_count: int
    exclamation_mark_count: int
    bot_rating: float
    contains_abstract_raw: float = 0.0
    time_score: float = 0.0
    type_factor: float = 0.0
    user_score: float = 0.0
    content_score: float = 0.0


class _Subj(msgspec.Struct):
    processed: _Processed
    pid: str | None = None


class _ObjData(msgspec.Struct):
    doi: str


class _Obj(msgspec.Struct):
    data: _ObjData


class _Event(msgspec.Struct):
    timestamp: str
    obj: _Obj
    subj: _Subj
    id: str | None = None


class Point(msgspec.Struct, frozen=True, array_like=True):
    """One stored event: compact (a JSON array on the wire), immutable, hashable."""

    event_id: str
    doi: str
    time_ns: int  # UTC, nanoseconds since the epoch
    score: float
    sentiment_raw: float
    followers: int
    length: int
    questions: int
    exclamations: int
    bot_rating: float
    contains_abstract_raw: float
    time_score: float
    type_factor: float
    user_score: float
    content_score: float

    def fields(self) -> tuple[float | int, ...]:
        """The measured values in :data:`POINT_FIELDS` order."""
        return tuple(getattr(self, name) for name in POINT_FIELDS)


_decoder = msgspec.json.Decoder(_Event)
_encoder = msgspec.json.Encoder()


def parse_timestamp_ns(text: str) -> int:
    """ISO 8601 -> UTC nanoseconds; a timestamp without offset is taken as UTC (SPEC §2)."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00", 1))
    except ValueError:
        raise InvalidEvent(f"timestamp {text!r} is not ISO 8601") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    whole = int(parsed.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + parsed.microsecond * 1_000


def event_identity(event_id: str | None, pid: str | None, doi: str, timestamp: str) -> str:
    """The event's id, or a stable hash of (pid, doi, timestamp) for old events without one.

    The hash must not depend on the process (unlike ``hash()``), so a redelivered event gets
    the same identity in any worker, today or after a restart.
    """
    if event_id:
        return event_id
    digest = hashlib.blake2b(f"{pid or ''}\x1f{doi}\x1f{timestamp}".encode(), digest_size=16)
    return "h:" + digest.hexdigest()


def decode_event(raw: bytes | str) -> Point:
    """Validate one Kafka value and return its point, or raise :class:`InvalidEvent`."""
    try:
        event = _decoder.decode(raw)
    except msgspec.ValidationError as error:
        raise InvalidEvent(f"invalid event: {error}") from None
    except msgspec.DecodeError as error:
        raise InvalidEvent(f"not valid JSON: {error}") from None
    doi = event.obj.data.doi.strip()
    if not doi:
        raise InvalidEvent("invalid event: empty `$.obj.data.doi`")
    processed = event.subj.processed
    time_ns = parse_timestamp_ns(event.timestamp)
    return Point(
        event_id=event_identity(event.id, event.subj.pid, doi, event.timestamp),
        doi=doi,
        time_ns=time_ns,
        score=processed.score,
        sentiment_raw=processed.sentiment_raw,
        followers=processed.followers,
        length=processed.length,
        questions=processed.question_mark_count,
        exclamations=processed.exclamation_mark_count,
        bot_rating=processed.bot_rating,
        contains_abstract_raw=processed.contains_abstract_raw,
        time_score=processed.time_score,
        type_factor=processed.type_factor,
        user_score=processed.user_score,
        content_score=processed.content_score,
    )


def points_to_wire(points: list[Point]) -> list[list[object]]:
    """Points as plain JSON-able lists (what a Celery ingest task carries)."""
    return msgspec.to_builtins(points)


def points_from_wire(payload: object) -> list[Point]:
    """Inverse of :func:`points_to_wire`; rejects a malformed batch loudly."""
    try:
        return msgspec.convert(payload, list[Point])
    except msgspec.ValidationError as error:
        raise InvalidEvent(f"malformed batch: {error}") from None


def point_size(point: Point) -> int:
    return len(_encoder.encode(point)) + 1
