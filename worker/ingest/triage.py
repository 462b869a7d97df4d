"""Dead-letter triage policy (pure): positions, reason kinds, filters, and what a replay does.
Pure so the rules operators rely on ("never skipped for ever", "parked after
``DLQ_MAX_ATTEMPTS``") are property-tested, and a dry run decides as the real replay.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, order=True)
class Position:
    """Where a letter sits on the dead-letter topic; printed as ``partition@offset`` (as `dlq list`)."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}@{self.offset}"


_POSITION = re.compile(r"(\d+)@(\d+)")
_RANGE = re.compile(r"(\d+)@(\d+)(?:-(\d*))?")


def parse_position(text: str) -> Position:
    """``"0@17"`` -> Position(0, 17); ValueError (with the expected form) otherwise."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a position: partition@offset, e.g. 0@17")
    return Position(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class OffsetRange:
    """Offsets ``first``..``last`` (inclusive; ``last`` None = open) of one partition."""

    partition: int
    first: int
    last: int | None

    def __contains__(self, position: object) -> bool:
        return (isinstance(position, Position) and position.partition == self.partition
                and position.offset >= self.first and (self.last is None or position.offset <= self.last))


def parse_range(text: str) -> OffsetRange:
    """``P@O`` (one letter), ``P@A-B`` (A to B inclusive) or ``P@A-`` (A onwards)."""
    match = _RANGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an offset range: P@O, P@A-B or P@A-, e.g. 0@10-20")
    partition, first, last = int(match.group(1)), int(match.group(2)), match.group(3)
    if last is None:
        return OffsetRange(partition, first, first)
    if last == "":
        return OffsetRange(partition, first, None)
    if int(last) < first:
        raise ValueError(f"{text!r}: the range ends before it starts")
    return OffsetRange(partition, first, int(last))


#: A letter's reason kind: a stable category of its free-text reason (worker/core/events.py,
#: tasks/ingest.py, the replay), the words before the details.
REASON_KINDS: dict[str, str] = {
    "invalid-json": "the event is not JSON (or is nested too deeply)",
    "undecodable": "the event could not be decoded at all",
    "invalid-event": "JSON, but not a valid event: a field missing, too long, not Unicode, a bad timestamp",
    "malformed-batch": "a batch that is not a list of points",
    "store-unavailable": "a batch past INGEST_OUTAGE_TOLERANCE_S: the event store was down",
    "store-rejected": "points the event store refused",
    "unreadable": "the record on the topic is not a dead letter",
    "other": "any other reason",
}

_PREFIXES: tuple[tuple[str, str], ...] = (
    ("not valid JSON", "invalid-json"),
    ("undecodable event", "undecodable"),
    ("invalid event", "invalid-event"),
    ("timestamp ", "invalid-event"),
    ("malformed batch", "malformed-batch"),
    ("store unavailable", "store-unavailable"),
    ("store rejected", "store-rejected"),
)


def reason_kind(reason: str | None) -> str:
    """The kind of a reason (None: an unreadable record); "other" for a reason no rule knows."""
    if reason is None:
        return "unreadable"
    text = reason.lstrip()
    return next((kind for prefix, kind in _PREFIXES if text.startswith(prefix)), "other")


class State(StrEnum):
    """What the triage log says of a position (its latest entry); no entry = pending."""

    REPLAYED = "replayed"  # re-published to the ingest queue
    REDEADLETTERED = "redeadlettered"  # still invalid: appended again with attempt + 1
    PARKED = "parked"  # still invalid after DLQ_MAX_ATTEMPTS, or unreadable: kept, not re-appended
    DISCARDED = "discarded"  # an operator decided it cannot succeed

    @property
    def final(self) -> bool:
        """Done for good: every state but parked, which an operator may still replay."""
        return self is not State.PARKED


class Outcome(StrEnum):
    """What a replay does with one letter it reads."""

    REPLAY = "replay"  # valid (again): publish
    REDEADLETTER = "redeadletter"  # still invalid, attempts left: append with attempt + 1
    PARK = "park"  # still invalid with no attempt left, or unreadable
    PENDING = "pending"  # outside the filter, or parked and not asked for: left as it is
    DONE = "done"  # already replayed or discarded: nothing to do


def still_invalid(attempt: int, max_attempts: int) -> Outcome:
    """A letter that failed validation again, after ``attempt`` failures: appended again (as
    attempt + 1) while the total stays below ``max_attempts``, parked by the failure that
    reaches it, so no letter is appended for ever."""
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    return Outcome.REDEADLETTER if attempt + 1 < max_attempts else Outcome.PARK


@dataclass(frozen=True)
class Selection:
    """Which letters a replay takes: reason kinds (empty = all), offset ranges (empty = all),
    and whether parked letters are taken again (an operator fixed what parked them)."""

    kinds: frozenset[str] = frozenset()
    ranges: tuple[OffsetRange, ...] = ()
    include_parked: bool = False

    def takes(self, position: Position, kind: str, state: State | None) -> bool:
        """Whether the replay handles this letter (and resolves it) rather than leaving it."""
        if state is not None and (state.final or not self.include_parked):
            return False
        return (not self.kinds or kind in self.kinds) and (not self.ranges or any(position in r for r in self.ranges))


def triage(position: Position, kind: str, state: State | None, selection: Selection,
           valid: bool | None, attempt: int, max_attempts: int) -> Outcome:
    """What a replay does with one letter. ``valid`` is whether it validates now (None:
    unreadable, never valid); asked only of letters the selection takes."""
    if state is not None and state.final:
        return Outcome.DONE
    if not selection.takes(position, kind, state):
        return Outcome.PENDING
    if valid is None:
        return Outcome.PARK
    if valid:
        return Outcome.REPLAY
    return still_invalid(attempt, max_attempts)


def advance(cursor: int, read: Sequence[tuple[int, bool]]) -> int:
    """The new cursor of one partition, given the (offset, resolved) of each letter read from
    ``cursor`` on: past the leading run of resolved letters only, so a letter a filter left
    pending is read again by the next replay (what was resolved behind it is skipped by its
    state). Kafka's offsets may have gaps."""
    for offset, resolved in read:
        if offset < cursor:
            continue
        if not resolved:
            return cursor
        cursor = offset + 1
    return cursor


def selection_from(kinds: Iterable[str], ranges: Iterable[str], include_parked: bool) -> Selection:
    """A selection from the command line's words; ValueError names the first bad one."""
    unknown = sorted(set(kinds) - set(REASON_KINDS))
    if unknown:
        raise ValueError(f"unknown reason kind(s) {', '.join(unknown)}; known: {', '.join(REASON_KINDS)}")
    return Selection(frozenset(kinds), tuple(parse_range(r) for r in ranges), include_parked)


def hexdump(data: bytes, width: int = 16) -> list[str]:
    """``offset  hex bytes  |printable|`` lines, as ``hexdump -C`` prints them: a payload that
    is not UTF-8 is shown byte for byte instead of being guessed at."""
    lines = []
    for start in range(0, len(data), width):
        chunk = data[start:start + width]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{start:08x}  {hexes:<{width * 3 - 1}}  |{text}|")
    return lines
