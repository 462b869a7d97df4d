"""The `aggregator` command: one entry point for every process and operator task.

Each subcommand imports what it needs lazily, so `aggregator --help` and the health check
stay fast and do not need every service to be reachable.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from worker.logs import setup_logging
from worker.settings import get_settings

log = logging.getLogger("aggregator")


def cmd_setup(_: argparse.Namespace) -> int:
    from worker.db.migrate import migrate
    from worker.deadletter import ensure_topic
    from worker.store import open_store

    settings = get_settings()
    applied = migrate(settings.postgres_dsn)  # trend tables live in PostgreSQL whatever the event store
    store = open_store(settings)
    store.setup()  # idempotent (for PostgreSQL the migrations above, already applied)
    store.close()
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic, settings.kafka_dlq_partitions)
    print(f"setup done: migrations applied={applied or 'none'} store={store.name} "
          f"dead-letter topic={settings.kafka_dlq_topic}")
    return 0


def build_bridge():
    import redis

    from worker.app import app
    from worker.bridge.consumer import Bridge
    from worker.bridge.depth import QueueDepthProbe
    from worker.bridge.publisher import IngestPublisher
    from worker.deadletter import DeadLetterWriter, ensure_topic

    settings = get_settings()
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic, settings.kafka_dlq_partitions)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    probe = QueueDepthProbe(client, settings.ingest_queue, interval_s=settings.bridge_depth_check_interval_s)
    return Bridge(settings, IngestPublisher(app, settings.ingest_queue), probe,
                  DeadLetterWriter(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic))


def cmd_bridge(_: argparse.Namespace) -> int:
    bridge = build_bridge()
    bridge.install_signal_handlers()
    if get_settings().bridge_metrics_port:
        from worker.bridge.metrics import serve_metrics

        serve_metrics(bridge, get_settings().bridge_metrics_port)
    bridge.run()
    return 0


def _reader_writer():
    from worker.deadletter import DeadLetterReader, DeadLetterWriter

    s = get_settings()
    return (DeadLetterReader(s.kafka_bootstrap_servers, s.kafka_dlq_topic, s.kafka_group_id),
            DeadLetterWriter(s.kafka_bootstrap_servers, s.kafka_dlq_topic))


def cmd_dlq_list(args: argparse.Namespace) -> int:
    reader, _ = _reader_writer()
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
                print(f"{where}\t{letter.failed_at}\t{letter.kind}\t{size}\t{letter.source}\t"
                      f"attempt={letter.attempt}\t{letter.reason}")
            shown += 1
            if args.limit and shown >= args.limit:
                break
    finally:
        reader.close()
    print(f"{shown} dead letter(s) {'in total' if args.all else 'pending replay'}", file=sys.stderr)
    return 0


def cmd_dlq_replay(_: argparse.Namespace) -> int:
    from worker.app import app
    from worker.bridge.publisher import IngestPublisher
    from worker.replay import replay

    reader, writer = _reader_writer()
    try:
        report = replay(reader, writer, IngestPublisher(app, get_settings().ingest_queue))
    finally:
        reader.close()
        writer.close()
    print(json.dumps(vars(report)))
    return 0


def cmd_produce_demo(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from worker.demo import demo_events, produce

    s = get_settings()
    payloads = demo_events(args.events, args.dois, seed=args.seed, spread=timedelta(hours=args.hours))
    n = produce(s.kafka_bootstrap_servers, args.topic or s.kafka_topic, payloads)
    print(f"produced {n} events on {args.dois} DOIs to {args.topic or s.kafka_topic}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from worker.devstack.run import run_dev

    return run_dev(events=args.events, dois=args.dois, workdir=args.workdir, keep=args.keep)


def cmd_trends_run(args: argparse.Namespace) -> int:
    from worker.trends.cli import run_once

    return run_once(args.duration, args.at)


def cmd_post(args: argparse.Namespace) -> int:
    from worker.post.morning import post_cli

    return post_cli(dry_run=args.dry_run)


def cmd_schedule(args: argparse.Namespace) -> int:
    from worker.dayplan.cli import run_schedule

    return run_schedule(output=args.output, day=args.date, days=args.days, influx_tasks=args.influx_tasks)


def cmd_health(args: argparse.Namespace) -> int:
    from worker.health import check

    return check(args.component)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aggregator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="apply migrations, set up the event store and Kafka topics (idempotent)"
                   ).set_defaults(func=cmd_setup)
    sub.add_parser("bridge", help="run the Kafka -> Celery bridge").set_defaults(func=cmd_bridge)

    dlq = sub.add_parser("dlq", help="dead letters").add_subparsers(dest="dlq_command", required=True)
    lister = dlq.add_parser("list", help="list dead letters pending replay")
    lister.add_argument("--all", action="store_true", help="also those already replayed")
    lister.add_argument("--limit", type=int, default=0)
    lister.set_defaults(func=cmd_dlq_list)
    dlq.add_parser("replay", help="validate again and re-publish pending dead letters"
                   ).set_defaults(func=cmd_dlq_replay)

    demo = sub.add_parser("produce-demo", help="produce realistic synthetic events to Kafka")
    demo.add_argument("--events", type=int, default=1000)
    demo.add_argument("--dois", type=int, default=50)
    demo.add_argument("--hours", type=float, default=6.0, help="spread timestamps over the last H hours")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--topic", default=None)
    demo.set_defaults(func=cmd_produce_demo)

    dev = sub.add_parser("dev", help="run the whole product locally on real services (Ctrl-C stops)")
    dev.add_argument("--events", type=int, default=5000)
    dev.add_argument("--dois", type=int, default=200)
    dev.add_argument("--workdir", default=".devstack")
    dev.add_argument("--keep", action="store_true", help="keep running after the demo until Ctrl-C")
    dev.set_defaults(func=cmd_dev)

    trends = sub.add_parser("trends", help="trend runs").add_subparsers(dest="trends_command", required=True)
    run = trends.add_parser("run", help="run one trend calculation now and print its phases")
    run.add_argument("duration")
    run.add_argument("--at", default=None, help="ISO 8601 time to compute at (default: now)")
    run.set_defaults(func=cmd_trends_run)

    post = sub.add_parser("post", help="the morning post")
    post.add_argument("--dry-run", action="store_true", help="print today's text, post nothing")
    post.set_defaults(func=cmd_post)

    schedule = sub.add_parser("schedule", help="draw the day's plan of every scheduled job: heatmap (SVG) and text")
    schedule.add_argument("--output", default="schedule.svg",
                          help="SVG to write (default: schedule.svg); the summary goes to <name>.txt and stdout")
    schedule.add_argument("--date", default=None, help="the UTC day to plan, YYYY-MM-DD (default: today)")
    schedule.add_argument("--days", type=int, default=7, help="measure run lengths over the last N days (default: 7)")
    schedule.add_argument("--influx-tasks", action=argparse.BooleanOptionalAction, default=None,
                          help="include the InfluxDB tasks (default: when EVENT_STORE=influxdb)")
    schedule.set_defaults(func=cmd_schedule)

    health = sub.add_parser("health", help="exit 0 when a component's dependencies answer")
    health.add_argument("component", choices=("bridge", "worker", "beat", "setup"), nargs="?", default="worker")
    health.set_defaults(func=cmd_health)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    settings = get_settings()  # exits with a readable message on a bad environment
    setup_logging(settings.log_level, settings.log_format)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
