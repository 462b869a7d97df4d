"""Event validation: every outcome an upstream event can have (SPEC §2)."""

from __future__ import annotations

import json
import re
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.events import (
    InvalidEvent,
    decode_event,
    event_identity,
    normalize_doi,
    parse_timestamp_ns,
    points_from_wire,
    points_to_builtins,
    points_to_wire,
    wire_to_builtins,
)

pytestmark = pytest.mark.unit

EVENT: dict[str, Any] = {
    "id": "b0f2",
    "timestamp": "2021-05-04T12:34:56Z",
    "obj": {"data": {"doi": "10.1101/2021.04.01.123456", "title": "A paper"}},
    "subj": {"pid": "https://twitter.com/x/status/1", "processed": {
        "score": 42.5, "sentiment_raw": 0.3, "followers": 1200, "length": 180,
        "question_mark_count": 1, "exclamation_mark_count": 0, "bot_rating": 10,
        "contains_abstract_raw": 0.2, "time_score": 20.0, "type_factor": 1.0,
        "user_score": 25.1, "content_score": 14.0}},
}


def encode(event: dict) -> bytes:
    return json.dumps(event).encode()


def test_valid_event_becomes_a_point() -> None:
    point = decode_event(encode(EVENT))
    assert point.event_id == "b0f2"
    assert point.doi == "10.1101/2021.04.01.123456"
    assert point.time_ns == 1620131696 * 10**9
    assert (point.score, point.followers, point.questions, point.exclamations) == (42.5, 1200, 1, 0)
    assert point.bot_rating == 10.0 and point.contains_abstract_raw == 0.2


def test_malformed_json_is_rejected_with_reason() -> None:
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        decode_event(b'{"id": "x", "timestamp": ')


@pytest.mark.parametrize("path", [
    ("timestamp",), ("obj",), ("obj", "data", "doi"), ("subj", "processed"),
    ("subj", "processed", "score"), ("subj", "processed", "followers"),
    ("subj", "processed", "bot_rating"), ("subj", "processed", "question_mark_count"),
])
def test_missing_required_field_names_the_field(path: tuple[str, ...]) -> None:
    event = deepcopy(EVENT)
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(InvalidEvent, match=f"missing required field `{path[-1]}`"):
        decode_event(encode(event))


@pytest.mark.parametrize(("field", "value", "where"), [
    ("followers", "1200", "$.subj.processed.followers"),
    ("followers", 12.5, "$.subj.processed.followers"),
    ("followers", True, "$.subj.processed.followers"),
    ("score", "high", "$.subj.processed.score"),
    ("length", None, "$.subj.processed.length"),
])
def test_wrong_type_names_the_path(field: str, value: object, where: str) -> None:
    event = deepcopy(EVENT)
    event["subj"]["processed"][field] = value
    with pytest.raises(InvalidEvent, match=re.escape(f"at `{where}`")):
        decode_event(encode(event))


def test_unknown_extra_fields_are_ignored() -> None:
    event = deepcopy(EVENT)
    event["extra"] = {"anything": [1, 2]}
    event["subj"]["processed"]["new_metric"] = 3
    assert decode_event(encode(event)) == decode_event(encode(EVENT))


def test_optional_fields_default_to_zero() -> None:
    event = deepcopy(EVENT)
    for name in ("contains_abstract_raw", "time_score", "type_factor", "user_score", "content_score"):
        del event["subj"]["processed"][name]
    point = decode_event(encode(event))
    assert point.contains_abstract_raw == 0.0 and point.content_score == 0.0


def test_bad_timestamp_and_empty_doi_are_invalid() -> None:
    event = deepcopy(EVENT)
    event["timestamp"] = "yesterday"
    with pytest.raises(InvalidEvent, match="not ISO 8601"):
        decode_event(encode(event))
    event = deepcopy(EVENT)
    event["obj"]["data"]["doi"] = "  "
    with pytest.raises(InvalidEvent, match="empty"):
        decode_event(encode(event))


@pytest.mark.parametrize(("text", "expected"), [
    ("2021-05-04T12:34:56Z", 1620131696 * 10**9),
    ("2021-05-04T12:34:56", 1620131696 * 10**9),  # no offset: UTC
    ("2021-05-04T14:34:56+02:00", 1620131696 * 10**9),
    ("2021-05-04T12:34:56.123456Z", 1620131696 * 10**9 + 123456000),
])
def test_timestamps_become_utc_nanoseconds(text: str, expected: int) -> None:
    assert parse_timestamp_ns(text) == expected


def test_identity_without_id_is_a_stable_hash() -> None:
    event = deepcopy(EVENT)
    del event["id"]
    first = decode_event(encode(event)).event_id
    assert first == decode_event(encode(event)).event_id == event_identity(
        None, EVENT["subj"]["pid"], EVENT["obj"]["data"]["doi"], EVENT["timestamp"])
    other = deepcopy(event)
    other["subj"]["pid"] = "https://twitter.com/y/status/2"  # same DOI, same second
    assert decode_event(encode(other)).event_id != first


@given(st.lists(st.builds(
    lambda i, s, f: decode_event(encode({**EVENT, "id": f"e{i}", "subj": {
        **EVENT["subj"], "processed": {**EVENT["subj"]["processed"], "score": s, "followers": f}}})),
    st.integers(0, 10**6), st.one_of(st.just(0.0), st.floats(1e-9, 1e9), st.floats(-1e9, -1e-9)),
    st.integers(0, 10**9)), max_size=20))
def test_wire_round_trip(points: list) -> None:
    wire = points_to_wire(points)
    assert isinstance(wire, str)  # one JSON text: what Celery's serializer carries cheaply
    assert points_from_wire(json.loads(json.dumps(wire))) == points
    # The list form (dead letters, batches queued by an older bridge) is the same batch.
    assert points_from_wire(points_to_builtins(points)) == points
    assert points_from_wire(json.loads(wire)) == points


@pytest.mark.parametrize("payload", [
    [["only-an-id"]],
    '[["only-an-id"]]',
    "not json",
    b'[["e1", "10.1/x", "yesterday"]]',
    '{"points": []}',
])
def test_malformed_wire_batch_is_rejected(payload: object) -> None:
    with pytest.raises(InvalidEvent, match="malformed batch"):
        points_from_wire(payload)


def test_wire_to_builtins_keeps_what_came() -> None:
    assert wire_to_builtins('[["a", 1]]') == [["a", 1]]
    assert wire_to_builtins("not json") == "not json"
    assert wire_to_builtins([["a"]]) == [["a"]]


@pytest.mark.parametrize("path", [("obj", "data", "doi"), ("id",)])
def test_nul_in_text_is_invalid(path: tuple[str, ...]) -> None:
    event = deepcopy(EVENT)
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "10.1/a\x00b"
    with pytest.raises(InvalidEvent, match="NUL"):
        decode_event(encode(event))


@pytest.mark.parametrize(("field", "value"), [
    ("length", 2**31), ("followers", 2**63), ("question_mark_count", -(2**31) - 1)])
def test_integers_outside_the_store_types_are_invalid(field: str, value: int) -> None:
    event = deepcopy(EVENT)
    event["subj"]["processed"][field] = value
    with pytest.raises(InvalidEvent, match=f"processed.{field}"):
        decode_event(encode(event))


@pytest.mark.parametrize("stamp", ["9999-12-31T00:00:00Z", "0001-01-01T00:00:00Z"])
def test_timestamps_beyond_int64_nanoseconds_are_invalid(stamp: str) -> None:
    """Caught here, one event, rather than failing the whole batch in the worker."""
    event = deepcopy(EVENT)
    event["timestamp"] = stamp
    with pytest.raises(InvalidEvent, match="outside 1677-2262"):
        decode_event(encode(event))


_any_int = st.one_of(st.integers(-(2**70), 2**70), st.integers(-(2**31) - 2, 2**31 + 2))
_any_float = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(
    doi=st.text(max_size=40), event_id=st.one_of(st.none(), st.text(max_size=40)),
    stamp=st.one_of(st.datetimes(timezones=st.sampled_from([None, UTC])).map(datetime.isoformat),
                    st.text(max_size=30)),
    ints=st.lists(_any_int, min_size=4, max_size=4), floats=st.lists(_any_float, min_size=8, max_size=8),
)
def test_what_the_bridge_accepts_the_worker_and_postgres_accept(
        doi: str, event_id: str | None, stamp: str, ints: list[int], floats: list[float]) -> None:
    """The bridge's validation is the whole contract: a point it lets through is never
    refused later as a malformed batch (which would cost the batch) nor fails to encode
    for COPY; anything else is an InvalidEvent with a reason, never another exception."""
    from worker.store.postgres.copy import copy_buffer

    names = ("followers", "length", "question_mark_count", "exclamation_mark_count")
    processed = dict(zip(names, ints, strict=True)) | dict(zip(
        ("score", "sentiment_raw", "bot_rating", "contains_abstract_raw", "time_score", "type_factor",
         "user_score", "content_score"), floats, strict=True))
    event = {"timestamp": stamp, "obj": {"data": {"doi": doi}}, "subj": {"processed": processed}}
    if event_id is not None:
        event["id"] = event_id
    try:
        point = decode_event(encode(event))
    except InvalidEvent:
        return
    assert points_from_wire(points_to_wire([point])) == [point]
    copy_buffer([point])


# --- any bytes in: a point or InvalidEvent, never another exception (poison pills) ---------------
def _decodes_or_is_invalid(raw: bytes) -> None:
    try:
        decode_event(raw)
    except InvalidEvent as invalid:
        assert invalid.reason  # the dead letter says why
        assert "\n" not in invalid.reason or len(invalid.reason) < 2000


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_raise_anything_but_invalid_event(raw: bytes) -> None:
    _decodes_or_is_invalid(raw)


VALID = json.dumps(EVENT).encode()


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_mutated_valid_events_never_raise_anything_but_invalid_event(data: st.DataObject) -> None:
    """Byte-level mutations of a valid event: flips, insertions of bad UTF-8, truncation."""
    raw = bytearray(VALID)
    for _ in range(data.draw(st.integers(1, 4))):
        if not raw:
            break
        where = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "insert", "truncate"]))
        if action == "flip":
            raw[where] = data.draw(st.integers(0, 255))
        elif action == "insert":
            raw[where:where] = data.draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\xc3", b"\x00", b"\\u0000",
                                                           b"\\ud800", b'"', b"[", b"{"]))
        else:
            del raw[where:]
    _decodes_or_is_invalid(bytes(raw))


def _with(path: tuple[str, ...], value: object) -> dict[str, Any]:
    event = deepcopy(EVENT)
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return event


@pytest.mark.parametrize("path", [("id",), ("timestamp",), ("obj", "data", "doi"), ("subj", "pid")])
@pytest.mark.parametrize("bad", [b"\xff", b"\xed\xa0\x80", b"\xc3("])
def test_invalid_utf8_inside_a_string_is_an_invalid_event(path: tuple[str, ...], bad: bytes) -> None:
    raw = encode(_with(path, "MARK")).replace(b"MARK", b"10.1/a" + bad)
    with pytest.raises(InvalidEvent, match="not valid JSON"):
        decode_event(raw)


@pytest.mark.parametrize("path", [("id",), ("timestamp",), ("obj", "data", "doi"), ("subj", "pid")])
def test_lone_surrogate_escape_is_an_invalid_event(path: tuple[str, ...]) -> None:
    raw = encode(_with(path, "MARK")).replace(b"MARK", b"10.1/a\\ud800")
    with pytest.raises(InvalidEvent):
        decode_event(raw)


@pytest.mark.parametrize("depth", [1_000, 10_000, 100_000])
def test_deep_nesting_in_an_ignored_field_is_an_invalid_event(depth: int) -> None:
    raw = encode(EVENT)[:-1] + b', "extra": ' + b"[" * depth + b"]" * depth + b"}"
    with pytest.raises(InvalidEvent, match=r"nested too deeply|not valid JSON"):
        decode_event(raw)


@pytest.mark.parametrize("path", [("id",), ("obj", "data", "doi")])
def test_keys_longer_than_an_index_entry_are_invalid(path: tuple[str, ...]) -> None:
    with pytest.raises(InvalidEvent, match="longer than 1024"):
        decode_event(encode(_with(path, "10.1/" + "x" * 10_000)))


def test_huge_numbers_and_unknown_fields() -> None:
    with pytest.raises(InvalidEvent):
        decode_event(encode(_with(("subj", "processed", "followers"), 10**30)))
    for score in (1e308, -1e101, 1e-300, -5e-324):  # no real magnitude: a store's product would overflow or underflow
        with pytest.raises(InvalidEvent, match="score"):
            decode_event(encode(_with(("subj", "processed", "score"), score)))
    for score in (0.0, -0.0, 1e100, -1e-100, 42.5):
        assert decode_event(encode(_with(("subj", "processed", "score"), score))).score == score
    assert decode_event(encode({**EVENT, "unknown": {"deep": [1, 2, {"x": None}]}})).event_id == "b0f2"


# --- DOI identity -----------------------------------------------------------------------------------
@pytest.mark.parametrize("doi", [
    "10.1101/ABC.1", "10.1101/abc.1", " 10.1101/abc.1 ", "https://doi.org/10.1101/abc.1",
    "http://dx.doi.org/10.1101/ABC.1", "https://dx.doi.org/10.1101/abc.1", "doi:10.1101/abc.1",
    "DOI:10.1101/Abc.1", "https://doi.org/10.1101%2Fabc.1", "doi.org/10.1101/abc.1",
])
def test_doi_spellings_are_one_publication(doi: str) -> None:
    assert normalize_doi(doi) == "10.1101/abc.1"
    assert decode_event(encode(_with(("obj", "data", "doi"), doi))).doi == "10.1101/abc.1"


def test_identity_without_id_hashes_the_doi_as_received() -> None:
    """A redelivery has the same bytes, so the same identity, whatever the normalization."""
    event = {k: v for k, v in EVENT.items() if k != "id"}
    upper = decode_event(encode(_with(("obj", "data", "doi"), "10.1101/ABC.1") | {"id": None}))
    lower = decode_event(encode(_with(("obj", "data", "doi"), "10.1101/abc.1") | {"id": None}))
    assert upper.doi == lower.doi and upper.event_id != lower.event_id
    assert decode_event(encode(event)).event_id == decode_event(encode(event)).event_id


@given(st.text(max_size=60))
def test_normalized_doi_has_no_surrounding_space_and_one_case(text: str) -> None:
    once = normalize_doi(text)
    assert once == once.strip() or not once.strip()
    assert once.lower() == once
