"""Processed discussion events: decoding, validation and the compact point (SPEC §2).

Each Kafka message is decoded once, in the bridge; only the compact :class:`Point` travels
on, never the raw 1–2 KB event. msgspec names the JSON path of the first bad field: the
dead-letter reason an operator reads.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Annotated, cast
from urllib.parse import unquote

import msgspec

from worker.core.failures import first_line


class InvalidEvent(ValueError):
    """An event that cannot be stored; ``reason`` is meant for the dead-letter listing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Integer measures are bounded by the stores' column types (PostgreSQL integer / bigint):
# an out-of-range value is an invalid event, named by its JSON path, not a failed write.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Int32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
# The score is multiplied in the stores (the decay; the day rollup's Σ score·x^j, x up to
# 43,200): PostgreSQL raises on a float product that overflows or underflows to 0, so a score
# of no real magnitude would fail every run whose span holds it (docs/trends.md, "The day rollup").
SCORE_MIN, SCORE_MAX = 1e-100, 1e100


# --- the wire format of the upstream event (only what we read; extra fields are ignored) --


class _Processed(msgspec.Struct):
    score: float
    sentiment_raw: float
    followers: Int64
    length: Int32
    question_mark_count: Int32
    exclamation_mark_count: Int32
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
    time_ns: Int64  # UTC, nanoseconds since the epoch
    score: float
    sentiment_raw: float
    followers: Int64
    length: Int32
    questions: Int32
    exclamations: Int32
    bot_rating: float
    contains_abstract_raw: float
    time_score: float
    type_factor: float
    user_score: float
    content_score: float


#: The measured fields of a Point, in its order (on the wire and in the stores); the stores'
#: ``count`` (always 1) is implicit.
POINT_FIELDS: tuple[str, ...] = Point.__struct_fields__[3:]

_decoder = msgspec.json.Decoder(_Event)
_encoder = msgspec.json.Encoder()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


def parse_timestamp_ns(text: str) -> int:
    """ISO 8601 -> UTC nanoseconds; a timestamp without offset is taken as UTC (SPEC §2).
    Integer arithmetic on the timedelta: no intermediate float shifts a microsecond."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidEvent(f"timestamp {text!r} is not ISO 8601") from None
    epoch = _EPOCH_NAIVE if parsed.tzinfo is None else _EPOCH
    return (parsed - epoch) // _MICROSECOND * 1_000


def event_identity(event_id: str | None, pid: str | None, doi: str, timestamp: str) -> str:
    """The event's id, or a stable hash of (pid, doi, timestamp) for old events without one:
    not ``hash()``, so a redelivered event gets the same identity in any process."""
    if event_id:
        return event_id
    digest = hashlib.blake2b(f"{pid or ''}\x1f{doi}\x1f{timestamp}".encode(), digest_size=16)
    return "h:" + digest.hexdigest()


#: Longest DOI or event id kept, in UTF-8 bytes. A B-tree index entry holds at most ~2.7 kB
#: (PostgreSQL: "index row requires N bytes"); real DOIs stay under 300 characters.
MAX_KEY_BYTES = 1024

# Resolver forms of a DOI that upstream sends now and then; all name the same publication.
_DOI_PREFIXES = ("https://doi.org/", "http://doi.org/", "https://dx.doi.org/", "http://dx.doi.org/",
                 "doi.org/", "dx.doi.org/", "doi:")


def normalize_doi(text: str) -> str:
    """One spelling per publication: resolver prefixes removed (a URL's DOI percent-decoded),
    lower case, as DOIs are case-insensitive (SPEC §8) and joins with amba's ``publication``
    compare ``lower(doi)``: ``https://doi.org/10.1101/ABC.1`` is stored as ``10.1101/abc.1``."""
    doi = text.strip()
    folded = doi.lower()
    for prefix in _DOI_PREFIXES:
        if folded.startswith(prefix):
            doi = doi[len(prefix):].strip()
            if "://" in prefix or prefix.endswith(".org/"):
                doi = unquote(doi).strip()
            break
    return doi.lower()


def _checked_text(value: str, where: str, *, limit: int | None = None) -> str:
    """Text a store can keep: valid UTF-8 (no lone surrogate from a ``\\ud800`` escape), no
    NUL (PostgreSQL refuses it in text), and within ``limit`` bytes."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent(f"invalid event: `{where}` is not valid Unicode (a lone surrogate)") from None
    if "\x00" in value:
        raise InvalidEvent(f"invalid event: NUL character in `{where}`")
    if limit is not None and size > limit:
        raise InvalidEvent(f"invalid event: `{where}` is {size} bytes, longer than {limit}")
    return value


def decode_event(raw: bytes | str) -> Point:
    """Validate one Kafka value into its point, or raise :class:`InvalidEvent` and nothing
    else, whatever the bytes: a message that crashed the bridge would do so after every restart."""
    try:
        return _decode(raw)
    except InvalidEvent:
        raise
    except msgspec.ValidationError as error:
        raise InvalidEvent(f"invalid event: {error}") from None
    except (msgspec.DecodeError, UnicodeError) as error:
        raise InvalidEvent(f"not valid JSON: {first_line(error, 300)}") from None
    except RecursionError:
        raise InvalidEvent("not valid JSON: nested too deeply") from None
    except Exception as error:
        raise InvalidEvent(f"undecodable event: {type(error).__name__}: {first_line(error, 300)}") from None


def _decode(raw: bytes | str) -> Point:
    event = _decoder.decode(raw)
    received_doi = _checked_text(event.obj.data.doi.strip(), "$.obj.data.doi", limit=MAX_KEY_BYTES)
    doi = normalize_doi(received_doi)
    if not doi:
        raise InvalidEvent("invalid event: empty `$.obj.data.doi`")
    if event.id is not None:
        _checked_text(event.id, "$.id", limit=MAX_KEY_BYTES)
    pid = _checked_text(event.subj.pid, "$.subj.pid") if event.subj.pid is not None else None
    timestamp = _checked_text(event.timestamp, "$.timestamp")
    processed = event.subj.processed
    if processed.score and not SCORE_MIN <= abs(processed.score) <= SCORE_MAX:
        raise InvalidEvent(f"invalid event: `$.subj.processed.score` {processed.score!r} is not 0 and not within "
                           f"±[{SCORE_MIN}, {SCORE_MAX}]")
    time_ns = parse_timestamp_ns(timestamp)
    if not INT64_MIN <= time_ns <= INT64_MAX:
        raise InvalidEvent(f"timestamp {timestamp!r} is outside 1677-2262 (int64 nanoseconds)")
    # The identity hashes the DOI as received, so a redelivery keeps it whatever normalize_doi
    # does. Positional: keywords cost a third of the construction, once per event.
    return Point(
        event_identity(event.id, pid, received_doi, timestamp), doi, time_ns,
        processed.score, processed.sentiment_raw, processed.followers, processed.length,
        processed.question_mark_count, processed.exclamation_mark_count, processed.bot_rating,
        processed.contains_abstract_raw, processed.time_score, processed.type_factor,
        processed.user_score, processed.content_score,
    )


_batch_decoder = msgspec.json.Decoder(list[Point])


def points_to_wire(points: list[Point]) -> str:
    """A batch as one JSON text, the argument of an ingest task: Celery escapes and its main
    process parses one string instead of 15 objects per event, and the pool child decodes
    it with msgspec in one pass (~14 µs less CPU per event, ``python -m bench --only ingest``)."""
    return _encoder.encode(points).decode()


def points_to_builtins(points: list[Point]) -> list[list[object]]:
    """Points as plain lists: the form a dead letter keeps (readable in ``dlq list``)."""
    return cast(list[list[object]], msgspec.to_builtins(points))


def points_from_wire(payload: object) -> list[Point]:
    """Inverse of :func:`points_to_wire`; also takes the list form a dead letter keeps."""
    try:
        if isinstance(payload, str | bytes):
            return _batch_decoder.decode(payload)
        return msgspec.convert(payload, list[Point])
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise InvalidEvent(f"malformed batch: {error}") from None


def wire_to_builtins(payload: object) -> object:
    """A task argument in the plain form a dead letter keeps; a string that is not JSON as it
    is (the dead letter must still say what came)."""
    if isinstance(payload, str | bytes):
        try:
            return msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return payload if isinstance(payload, str) else payload.decode(errors="replace")
    return payload


def point_size(point: Point) -> int:
    return len(_encoder.encode(point)) + 1
