"""Replaying dead letters (``aggregator dlq replay``, and the cursor's move after a discard):
each letter the selection takes is validated again, then re-published, appended again or
parked as :func:`worker.ingest.triage.triage` decides, and logged. A dry run decides the same
and changes nothing (docs/operating.md, "Dead letters").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from worker.core.events import InvalidEvent, Point, decode_event, points_from_wire
from worker.ingest.deadletter import DeadLetter, DeadLetterReader, DeadLetterWriter, batch_letter, event_letter
from worker.ingest.publisher import IngestPublisher
from worker.ingest.triage import Outcome, Position, Selection, State, advance, reason_kind, triage
from worker.ingest.triage_log import Entry, Resolution, TriageLog

log = logging.getLogger(__name__)


@dataclass
class ReplayReport:
    """What a replay did (or, dry, would do). ``still_invalid`` letters were appended again;
    ``parked`` counts the unreadable records too; ``left_pending`` were outside the selection
    (or parked and not asked for); ``already_done`` were replayed or discarded before."""

    read: int = 0
    events_replayed: int = 0
    batches_replayed: int = 0
    still_invalid: int = 0
    parked: int = 0
    unreadable: int = 0
    left_pending: int = 0
    already_done: int = 0
    dry_run: bool = False
    cursor: dict[str, int] = field(default_factory=dict)  # partition -> next offset, after the replay
    letters: dict[str, str] | None = None  # dry run: each letter's outcome but the done ones, by partition@offset

    def as_json(self) -> dict[str, object]:
        report = asdict(self)
        if self.letters is None:
            del report["letters"]
        return report


def again(letter: DeadLetter, reason: str) -> DeadLetter:
    """The letter appended again: the new reason, source "replay", attempt + 1."""
    if letter.kind == "batch":
        return batch_letter(letter.batch(), reason, source="replay", attempt=letter.attempt + 1)
    return event_letter(letter.raw(), reason, source="replay", origin=letter.origin, attempt=letter.attempt + 1)


@dataclass
class _Pass:
    """One replay's decisions, and what it holds to publish, append and log."""

    topic: str
    selection: Selection
    max_attempts: int
    actor: str
    publisher: IngestPublisher | None  # None on a dry run
    batch_size: int
    report: ReplayReport
    states: dict[Position, Resolution]
    entries: list[Entry] = field(default_factory=list)
    redead: list[DeadLetter] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    seen: dict[int, list[tuple[int, bool]]] = field(default_factory=dict)  # partition -> (offset, resolved)

    def take(self, where: Position, raw: bytes, letter: DeadLetter | None) -> None:
        self.report.read += 1
        resolution = self.states.get(where)
        state = resolution.state if resolution is not None else None
        kind = reason_kind(letter.reason if letter is not None else None)
        attempt = letter.attempt if letter is not None else 1
        valid: bool | None = None
        decoded: list[Point] = []
        why = "not a dead letter (unreadable record)"
        if letter is not None and self.selection.takes(where, kind, state):  # does it validate now?
            try:
                decoded = points_from_wire(letter.batch()) if letter.kind == "batch" else [decode_event(letter.raw())]
                valid, why = True, ""
            except InvalidEvent as error:
                valid, why = False, error.reason
        outcome = triage(where, kind, state, self.selection, valid, attempt, self.max_attempts)
        if self.report.letters is not None and outcome is not Outcome.DONE:
            self.report.letters[str(where)] = outcome.value
        resolved = outcome is not Outcome.PENDING or state is State.PARKED  # the cursor may pass it
        self.seen.setdefault(where.partition, []).append((where.offset, resolved))
        if outcome is Outcome.REPLAY and letter is not None:
            self.entries.append(Entry(where, State.REPLAYED, self.actor, f"valid on replay ({len(decoded)} event(s))",
                                      kind, attempt))
            self.report.events_replayed += len(decoded)
            if letter.kind == "batch":  # a batch goes as it was; events are gathered into batches of ``batch_size``
                self.report.batches_replayed += 1
                if self.publisher is not None:
                    self.publisher.publish(decoded, f"replay:{self.topic}:{where.partition}:{where.offset}")
            else:
                self.points.extend(decoded)
                if len(self.points) >= self.batch_size:
                    self.flush()
        elif outcome is Outcome.REDEADLETTER and letter is not None:
            self.report.still_invalid += 1
            self.redead.append(again(letter, why))
            self.entries.append(Entry(where, State.REDEADLETTERED, self.actor,
                                      f"still invalid, appended again as attempt {attempt + 1}: {why}", kind, attempt))
        elif outcome is Outcome.PARK:
            self.report.parked += 1
            if letter is None:
                self.report.unreadable += 1
                log.error("unreadable dead letter parked", extra={"position": str(where)})
            else:
                why = f"still invalid, failed {attempt + 1} time(s) (DLQ_MAX_ATTEMPTS={self.max_attempts}): {why}"
            self.entries.append(Entry(where, State.PARKED, self.actor, why, kind, attempt, raw))
        elif outcome is Outcome.PENDING:
            self.report.left_pending += 1
        else:
            self.report.already_done += 1

    def flush(self) -> None:
        if self.points and self.publisher is not None:
            first, last = self.points[0].event_id, self.points[-1].event_id
            self.publisher.publish(list(self.points), f"replay:{first}:{last}:{len(self.points)}")
        self.points.clear()


def replay(reader: DeadLetterReader, writer: DeadLetterWriter | None, publisher: IngestPublisher | None,
           triage_log: TriageLog, *, selection: Selection | None = None, max_attempts: int = 3,
           actor: str = "replay", dry_run: bool = False, batch_size: int = 1000,
           on_letter: Callable[[], object] | None = None) -> ReplayReport:
    """Replay the pending letters ``selection`` takes (default: all but the parked ones);
    ``on_letter`` hears of each one read (progress). A dry run needs no writer or publisher."""
    selection = selection or Selection()
    if not dry_run and (writer is None or publisher is None):
        raise ValueError("a replay that is not dry needs a writer and a publisher")
    cursor = reader.cursor()
    starts = dict(cursor)
    if selection.include_parked:  # parked letters may sit behind the cursor
        for partition, offset in triage_log.parked_from().items():
            starts[partition] = min(starts.get(partition, offset), offset)
    run = _Pass(reader.topic, selection, max_attempts, actor, None if dry_run else publisher, batch_size,
                ReplayReport(dry_run=dry_run, letters={} if dry_run else None), triage_log.states(since=starts))
    if run.publisher is not None:
        run.publisher.declare()
    for where, raw, letter in reader.records(starts):
        if on_letter is not None:
            on_letter()
        run.take(where, raw, letter)
    run.flush()
    moved = {p: advance(cursor.get(p, 0), read) for p, read in run.seen.items()}
    moved = {p: o for p, o in moved.items() if o != cursor.get(p)}
    if not dry_run:
        if writer is not None:
            writer.write(run.redead)
        triage_log.record(run.entries)
        reader.commit_cursor(moved)
    report = run.report
    report.cursor = {str(p): o for p, o in sorted({**cursor, **moved}.items())}
    log.info("replay done", extra={k: v for k, v in report.as_json().items() if k != "letters"})
    return report


def settle(reader: DeadLetterReader, triage_log: TriageLog) -> dict[int, int]:
    """Move the cursor over the resolved letters at its head (after a discard): reads only
    until the first pending letter of each partition. Returns the cursor."""
    cursor = reader.cursor()
    states = triage_log.states(since=cursor)
    moved = dict(cursor)
    stopped: set[int] = set()
    for where, _raw, _letter in reader.records(cursor):
        if where.partition in stopped:
            continue
        if where not in states:
            stopped.add(where.partition)
            if stopped >= set(cursor):
                break
            continue
        moved[where.partition] = where.offset + 1
    changed = {p: o for p, o in moved.items() if o != cursor.get(p)}
    reader.commit_cursor(changed)
    return moved

