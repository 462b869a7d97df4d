"""`aggregator dlq list|show|replay|discard`: triage of the dead letters, recorded in
:mod:`worker.ingest.triage_log`. Each reads Kafka first: a broker down is the failure reported."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from contextlib import ExitStack, closing

from worker.celeryapp.app import app
from worker.config.settings import Settings
from worker.core.failures import UsageError
from worker.core.progress import Progress
from worker.db.connection import Database
from worker.ingest.deadletter import DeadLetter, DeadLetterReader, DeadLetterWriter, replay_group
from worker.ingest.kafka_config import group_lag
from worker.ingest.publisher import IngestPublisher
from worker.ingest.replay import replay, settle
from worker.ingest.triage import Position, State, hexdump, reason_kind, selection_from
from worker.ingest.triage_log import Entry, TriageLog


def _reader(settings: Settings) -> DeadLetterReader:
    return DeadLetterReader(settings.kafka_connection(), settings.kafka_dlq_topic, settings.kafka_group_id,
                            connect_timeout_s=settings.connect_timeout_s)


def _log(settings: Settings) -> TriageLog:
    return TriageLog(Database.from_settings(settings), settings.kafka_dlq_topic)


def _actor(args: argparse.Namespace) -> str:
    """Who acts, for the triage log: --by, else the OS user (the container's, with compose)."""
    return str(args.by) if getattr(args, "by", None) else getpass.getuser()


def _size(letter: DeadLetter) -> int | str:
    # A batch kept as text (it was not a list of points) has no known size: "-".
    return 1 if letter.kind == "event" else (len(letter.points) if letter.points is not None else "-")


def list_letters(args: argparse.Namespace, settings: Settings) -> int:
    triage_log = _log(settings)
    shown = 0
    with closing(_reader(settings)) as reader:
        # {}: from the start of every partition (parked: nothing is parked, nothing to read)
        starts = triage_log.parked_from() if args.parked else {} if args.all else reader.cursor()
        states = triage_log.states(since=None if args.all or args.parked else starts)
        for where, _raw, letter in reader.records(starts) if not args.parked or starts else ():
            resolution = states.get(where)
            state = resolution.state.value if resolution is not None else "pending"
            if (args.parked and state != "parked") or (not args.all and not args.parked and resolution is not None):
                continue
            if letter is None:
                print(f"{where}\tunreadable\t\t\t\t\t{state}\tunreadable\t")
            else:
                reason = " ".join(letter.reason.split())  # one line per letter, whatever the reason holds
                print(f"{where}\t{letter.failed_at}\t{letter.kind}\t{_size(letter)}\t{letter.source}\t"
                      f"attempt={letter.attempt}\t{state}\t{reason_kind(letter.reason)}\t{reason}")
            shown += 1
            if args.limit and shown >= args.limit:
                break
    what = "in total" if args.all else "parked" if args.parked else "pending replay"
    print(f"{shown} dead letter(s) {what}", file=sys.stderr)
    return 0


def _payload_lines(raw: bytes, letter: DeadLetter | None) -> list[str]:
    if letter is not None and letter.kind == "batch" and letter.points is not None:
        return ["payload (batch points, JSON):", *json.dumps(letter.points, indent=2).splitlines()]
    data = letter.raw() if letter is not None else raw
    label = "payload" if letter is not None else "record (not a dead letter)"
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return [f"{label} (not UTF-8: hex, {len(data)} bytes):", *hexdump(data)]
    if not all(ch.isprintable() or ch in "\n\r\t" for ch in text):
        # Control characters would reach the operator's terminal as they are: bytes instead.
        return [f"{label} (control characters: hex, {len(data)} bytes):", *hexdump(data)]
    return [f"{label} (text, {len(data)} bytes):", text]


def _fetch_all(reader: DeadLetterReader, positions: list[Position],
               topic: str) -> list[tuple[Position, bytes, DeadLetter | None]]:
    """Every position's record, or a usage error naming those the topic does not have."""
    got = [(where, reader.fetch(where)) for where in positions]
    if missing := [str(where) for where, record in got if record is None]:
        raise UsageError(f"no dead letter at {', '.join(missing)} on {topic!r}",
                         "`aggregator dlq list --all` prints the positions the topic holds.")
    return [(where, *record) for where, record in got if record is not None]


def show_letters(args: argparse.Namespace, settings: Settings) -> int:
    with closing(_reader(settings)) as reader:
        records = _fetch_all(reader, list(args.positions), settings.kafka_dlq_topic)
    states = _log(settings).states_of([where for where, _, _ in records])
    for index, (where, raw, letter) in enumerate(records):
        if index:
            print()
        resolution = states.get(where)
        state = "pending" if resolution is None else (
            f"{resolution.state.value} by {resolution.actor} at {resolution.at.isoformat(timespec='seconds')}: "
            f"{resolution.why}")
        fields = [("position", where), ("state", state)]
        if letter is None:
            fields.append(("reason kind", "unreadable"))
        else:
            fields += [("reason kind", reason_kind(letter.reason)), ("reason", letter.reason),
                       ("kind", f"{letter.kind} ({_size(letter)} event(s))"), ("source", letter.source),
                       ("failed at", letter.failed_at), ("attempts", letter.attempt), ("origin", letter.origin or "-")]
        print("\n".join([*(f"{label + ':':<12} {value}" for label, value in fields), *_payload_lines(raw, letter)]))
    return 0


def replay_letters(args: argparse.Namespace, settings: Settings) -> int:
    try:
        selection = selection_from(args.reason_kind, args.offsets, args.include_parked)
    except ValueError as error:
        raise UsageError(str(error)) from None
    dry = bool(args.dry_run)
    publisher = None if dry else IngestPublisher(app, settings.ingest_queue)
    with ExitStack() as stack:
        reader = stack.enter_context(closing(_reader(settings)))
        writer = None if dry else stack.enter_context(closing(DeadLetterWriter(
            settings.kafka_connection(), settings.kafka_dlq_topic, connect_timeout_s=settings.connect_timeout_s)))
        if publisher is not None:
            publisher.declare()  # Redis first, as the replay itself does: its failure is the one reported
        pending = group_lag(settings.kafka_connection(), settings.kafka_dlq_topic,
                            replay_group(settings.kafka_group_id), timeout_s=settings.connect_timeout_s)
        # Letter by letter on stderr; the JSON report stays alone on stdout.
        progress = Progress("letters", pending, sys.stderr.write, terminal=sys.stderr.isatty())
        report = replay(reader, writer, publisher, _log(settings), selection=selection,
                        max_attempts=settings.dlq_max_attempts, actor=_actor(args), dry_run=dry,
                        on_letter=progress.advance)
    progress.finish()
    print(json.dumps(report.as_json()))
    return 0


def discard_letters(args: argparse.Namespace, settings: Settings) -> int:
    positions = list(dict.fromkeys(args.positions))  # a position named twice is discarded once
    triage_log = _log(settings)
    actor = _actor(args)
    with closing(_reader(settings)) as reader:
        records = _fetch_all(reader, positions, settings.kafka_dlq_topic)
        states = triage_log.states_of([where for where, _, _ in records])
        done = [f"{where} ({states[where].state.value})" for where, _, _ in records
                if where in states and states[where].state.final]
        if done:
            raise UsageError(f"already resolved, not discarded: {', '.join(done)}",
                             "`aggregator dlq show` prints what was done to them; nothing was recorded.")
        entries = [Entry(where, State.DISCARDED, actor, args.reason,
                         reason_kind(letter.reason if letter is not None else None),
                         letter.attempt if letter is not None else 1, raw) for where, raw, letter in records]
        triage_log.record(entries)
        for entry in entries:
            print(f"discarded {entry.position} ({entry.reason_kind}, attempt {entry.attempt}) by {actor}: "
                  f"{args.reason}")
        settle(reader, triage_log)
    print(f"{len(entries)} dead letter(s) discarded", file=sys.stderr)
    return 0
