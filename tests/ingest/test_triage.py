"""The dead-letter triage policy (pure): positions, reason kinds, selections, outcomes, the cursor."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.ingest.triage import (
    REASON_KINDS,
    OffsetRange,
    Outcome,
    Position,
    Selection,
    State,
    advance,
    hexdump,
    parse_position,
    parse_range,
    reason_kind,
    selection_from,
    still_invalid,
    triage,
)

pytestmark = pytest.mark.unit


def test_positions_read_as_dlq_list_prints_them() -> None:
    assert parse_position("0@17") == Position(0, 17)
    assert parse_position(" 3@0 ") == Position(3, 0)
    assert str(Position(2, 40)) == "2@40"
    for bad in ("17", "0@", "@1", "0@-1", "a@b", "0@1@2", "0@1-3", ""):
        with pytest.raises(ValueError, match="partition@offset"):
            parse_position(bad)


@given(st.integers(0, 10_000), st.integers(0, 2**62))
def test_a_printed_position_reads_back(partition: int, offset: int) -> None:
    assert parse_position(str(Position(partition, offset))) == Position(partition, offset)


def test_ranges() -> None:
    assert parse_range("0@5") == OffsetRange(0, 5, 5)
    assert parse_range("1@5-9") == OffsetRange(1, 5, 9)
    assert parse_range("1@5-") == OffsetRange(1, 5, None)
    assert Position(1, 9) in parse_range("1@5-9") and Position(1, 10) not in parse_range("1@5-9")
    assert Position(0, 7) not in parse_range("1@5-"), "another partition"
    assert Position(1, 10**12) in parse_range("1@5-")
    with pytest.raises(ValueError, match="ends before it starts"):
        parse_range("0@9-5")
    with pytest.raises(ValueError, match="offset range"):
        parse_range("0@x")


@given(st.integers(0, 5), st.integers(0, 1000), st.integers(0, 1000), st.integers(0, 5), st.integers(0, 1100))
def test_a_range_holds_exactly_its_offsets(partition: int, first: int, length: int, p: int, offset: int) -> None:
    span = parse_range(f"{partition}@{first}-{first + length}")
    assert (Position(p, offset) in span) == (p == partition and first <= offset <= first + length)


@pytest.mark.parametrize(("reason", "kind"), [
    ("not valid JSON: unexpected character", "invalid-json"),
    ("not valid JSON: nested too deeply", "invalid-json"),
    ("undecodable event: RecursionError: ...", "undecodable"),
    ("invalid event: Object missing required field `doi`", "invalid-event"),
    ("invalid event: NUL character in `$.obj.data.doi`", "invalid-event"),
    ("timestamp 'yesterday' is not ISO 8601", "invalid-event"),
    ("malformed batch: Expected `array`, got `str`", "malformed-batch"),
    ("store unavailable for 3601 s (INGEST_OUTAGE_TOLERANCE_S): connection refused", "store-unavailable"),
    ("store rejected: PostgreSQL refused 1 point(s)", "store-rejected"),
    ("something new", "other"),
    (None, "unreadable"),
])
def test_reason_kinds(reason: str | None, kind: str) -> None:
    assert reason_kind(reason) == kind
    assert kind in REASON_KINDS


@given(st.text())
def test_every_reason_has_a_documented_kind(reason: str) -> None:
    assert reason_kind(reason) in REASON_KINDS


def test_a_letter_is_parked_once_it_has_failed_max_attempts_times() -> None:
    # Default 3: a bridge letter (attempt 1) comes back once as attempt 2; its third failure parks it.
    assert [still_invalid(a, 3) for a in (1, 2, 3, 7)] == [Outcome.REDEADLETTER, Outcome.PARK,
                                                          Outcome.PARK, Outcome.PARK]
    assert still_invalid(1, 1) is still_invalid(1, 2) is Outcome.PARK
    assert still_invalid(2, 4) is Outcome.REDEADLETTER
    with pytest.raises(ValueError):
        still_invalid(1, 0)


@given(st.integers(1, 50), st.integers(1, 20))
def test_appending_again_ends(first_attempt: int, max_attempts: int) -> None:
    """However a letter starts, replays that find it invalid append it while its failures
    stay below max_attempts, then park it: never for ever, never past the limit."""
    attempt, appended = first_attempt, 0
    while still_invalid(attempt, max_attempts) is Outcome.REDEADLETTER:
        attempt, appended = attempt + 1, appended + 1
        assert attempt < max_attempts
    assert appended == max(0, max_attempts - first_attempt - 1)
    assert attempt + 1 >= max_attempts


AT = Position(0, 4)


def test_triage_outcomes() -> None:
    everything = Selection()
    assert triage(AT, "invalid-json", None, everything, True, 1, 3) is Outcome.REPLAY
    assert triage(AT, "invalid-json", None, everything, False, 1, 3) is Outcome.REDEADLETTER
    assert triage(AT, "invalid-json", None, everything, False, 2, 3) is Outcome.PARK
    assert triage(AT, "unreadable", None, everything, None, 1, 3) is Outcome.PARK
    for final in (State.REPLAYED, State.REDEADLETTERED, State.DISCARDED):
        assert triage(AT, "invalid-json", final, Selection(include_parked=True), True, 1, 3) is Outcome.DONE
    assert triage(AT, "invalid-json", State.PARKED, everything, True, 3, 3) is Outcome.PENDING
    assert triage(AT, "invalid-json", State.PARKED, Selection(include_parked=True), True, 3, 3) is Outcome.REPLAY
    assert triage(AT, "invalid-json", State.PARKED, Selection(include_parked=True), False, 3, 3) is Outcome.PARK
    by_kind = Selection(kinds=frozenset({"store-unavailable"}))
    assert triage(AT, "invalid-json", None, by_kind, True, 1, 3) is Outcome.PENDING
    assert triage(AT, "store-unavailable", None, by_kind, True, 1, 3) is Outcome.REPLAY
    by_offset = Selection(ranges=(parse_range("0@5-"),))
    assert triage(AT, "invalid-json", None, by_offset, True, 1, 3) is Outcome.PENDING
    assert triage(Position(0, 5), "invalid-json", None, by_offset, True, 1, 3) is Outcome.REPLAY


def test_selection_from_the_command_line() -> None:
    selection = selection_from(["invalid-json"], ["0@1-3"], True)
    assert selection == Selection(frozenset({"invalid-json"}), (OffsetRange(0, 1, 3),), True)
    with pytest.raises(ValueError, match="unknown reason kind"):
        selection_from(["typo"], [], False)


def test_the_cursor_stops_at_the_first_pending_letter() -> None:
    assert advance(10, [(10, True), (11, True), (12, False), (13, True)]) == 12
    assert advance(10, [(10, False), (11, True)]) == 10
    assert advance(10, [(10, True), (14, True)]) == 15, "gaps in the offsets"
    assert advance(10, [(3, False), (10, True)]) == 11, "letters read behind the cursor do not hold it"
    assert advance(10, []) == 10


@given(st.integers(0, 100), st.lists(st.booleans(), max_size=40))
def test_the_cursor_never_passes_a_pending_letter(cursor: int, resolved: list[bool]) -> None:
    read = [(cursor + i, r) for i, r in enumerate(resolved)]
    moved = advance(cursor, read)
    assert cursor <= moved <= cursor + len(read)
    assert all(r for offset, r in read if offset < moved), "everything passed is resolved"
    assert moved == cursor + len(read) or not dict(read)[moved], "it stops only at a pending letter"


def test_hexdump() -> None:
    assert hexdump(b"ab\xff\x00" + b"x" * 14) == [
        "00000000  61 62 ff 00 78 78 78 78 78 78 78 78 78 78 78 78  |ab..xxxxxxxxxxxx|",
        "00000010  78 78                                            |xx|",
    ]
    assert hexdump(b"") == []
