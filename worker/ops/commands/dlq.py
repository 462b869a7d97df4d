"""`aggregator dlq list|replay`: the dead letters, one line each, and their replay."""

from __future__ import annotations

import argparse
import json
import sys

from worker.celeryapp.app import app
from worker.config.settings import Settings
from worker.core.progress import Progress
from worker.ingest.deadletter import DeadLetterReader, DeadLetterWriter, replay_group
from worker.ingest.kafka_config import group_lag
from worker.ingest.publisher import IngestPublisher
from worker.ingest.replay import replay


def _reader(settings: Settings) -> DeadLetterReader:
    return DeadLetterReader(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic, settings.kafka_group_id,
                            connect_timeout_s=settings.connect_timeout_s)


def list_letters(args: argparse.Namespace, settings: Settings) -> int:
    reader = _reader(settings)
    shown = 0
    try:
        for position, letter in reader.read(pending_only=not args.all):
            where = f"{position.partition}@{position.offset - 1}"
            if letter is None:
                print(f"{where}\tunreadable")
            else:
                # A batch kept as text (it was not a list of points) has no known size: "-".
                size: int | str = 1 if letter.kind == "event" else (
                    len(letter.points) if letter.points is not None else "-")
                reason = " ".join(letter.reason.split())  # one line per letter, whatever the reason holds
                print(f"{where}\t{letter.failed_at}\t{letter.kind}\t{size}\t{letter.source}\t"
                      f"attempt={letter.attempt}\t{reason}")
            shown += 1
            if args.limit and shown >= args.limit:
                break
    finally:
        reader.close()
    print(f"{shown} dead letter(s) {'in total' if args.all else 'pending replay'}", file=sys.stderr)
    return 0


def replay_letters(args: argparse.Namespace, settings: Settings) -> int:
    reader = _reader(settings)
    writer = DeadLetterWriter(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic,
                              connect_timeout_s=settings.connect_timeout_s)
    publisher = IngestPublisher(app, settings.ingest_queue)
    try:
        publisher.declare()  # Redis first, as the replay itself does: its failure is the one reported
        pending = group_lag(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic,
                            replay_group(settings.kafka_group_id), timeout_s=settings.connect_timeout_s)
        # Letter by letter on stderr; the JSON report stays alone on stdout.
        progress = Progress("letters", pending, sys.stderr.write, terminal=sys.stderr.isatty())
        report = replay(reader, writer, publisher, on_letter=progress.advance)
    finally:
        reader.close()
        writer.close()
    progress.finish()
    print(json.dumps(vars(report)))
    return 0
