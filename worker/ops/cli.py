"""The `aggregator` command: one entry point for every process and operator task.

A failure ends in one or two lines and a ``sysexits`` code (docs/deploying.md, "Exit codes
and errors"); ``--debug`` adds the traceback and librdkafka's own log lines.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Protocol, TypeAlias, TypeVar

from worker.config.logs import setup_logging
from worker.config.settings import ConfigurationError, Settings, get_settings
from worker.core.durations import DEFAULT_DURATIONS
from worker.ingest.kafka_config import KAFKA_LOGGER
from worker.ingest.triage import REASON_KINDS, parse_position, parse_range
from worker.ops.failures import classify, exit_code
from worker.ops.health import COMPONENTS

#: A command's entry: ``run(args, settings) -> exit code``.
Command = Callable[[argparse.Namespace, Settings], int]


class CommandModule(Protocol):  # a module of worker.ops.commands
    def run(self, args: argparse.Namespace, settings: Settings) -> int: ...

T = TypeVar("T")

DISTRIBUTION = "altmetrics-trend-aggregator"
#: Subcommands that run until stopped: librdkafka's lines are part of their log.
LONG_RUNNING = {"bridge", "dev", "exporter"}


# -- argument types: a bad value is a usage error (exit 2) with one line ----------------------
def _usage_error(parse: Callable[[str], T]) -> Callable[[str], T]:
    """``parse`` with its ValueError as argparse's usage error (which otherwise drops the message)."""

    @functools.wraps(parse)
    def checked(text: str) -> T:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return checked


def _parsed(convert: Callable[[str], T], what: str,
            allowed: Callable[[T], bool] = lambda _: True) -> Callable[[str], T]:
    @_usage_error
    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not allowed(value):
            raise ValueError(f"{text!r} is not {what}")
        return value

    return parse


def _utc(text: str) -> datetime:
    """ISO 8601; a time without offset is UTC (as in the events)."""
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


iso_time = _parsed(_utc, "an ISO 8601 time, e.g. 2026-11-23T12:00:00+00:00")
iso_date = _parsed(lambda text: date.fromisoformat(text.strip()), "a day (YYYY-MM-DD)")
positive_int = _parsed(int, "a positive whole number", lambda n: n > 0)
non_negative_int = _parsed(int, "a whole number, 0 or more", lambda n: n >= 0)
positive_float = _parsed(float, "a positive number", lambda x: x > 0)


@_usage_error
def dlq_range(text: str) -> str:
    """Checked here (a usage error), kept as text: the replay builds its selection from it."""
    parse_range(text)
    return text


@_usage_error
def non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


dlq_position = _usage_error(parse_position)


# -- the parser ------------------------------------------------------------------------------------
def _version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown in --help (not for flags, unset options and empty repeatable ones),
    descriptions as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False, []) or isinstance(action, argparse._VersionAction):
            return action.help
        return super()._get_help_string(action)


_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _command(into: _Subparsers, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    return into.add_parser(name, help=summary, description=description or summary, formatter_class=_Formatter)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator", formatter_class=_Formatter,
        description="Trend aggregator for scholarly altmetrics: Kafka -> Celery -> event store -> trends in "
                    "PostgreSQL.\nEvery setting comes from the environment (see .env.example).",
        epilog="Exit codes: 0 ok, 1 a check failed (selftest, setup), 2 bad command line, 69 a service did not "
               "answer, 70 unexpected error, 75 try again later (a run of that duration, a maintenance run or a "
               "selftest is in flight), 78 bad configuration.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on failure show the traceback, and show librdkafka's own log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = _command(sub, "setup", "create or update what the product needs (idempotent)",
                     "Apply the migrations, set up the event store and the dead-letter topic, then run `aggregator "
                     "selftest`. Safe at every start. Refuses .env.example's change-me secrets.")
    setup.add_argument("--allow-placeholder-secrets", action="store_true",
                       help="accept change-me secrets (a throwaway development stack only)")
    setup.add_argument("--no-selftest", action="store_true", help="skip the self-test at the end")

    _command(sub, "selftest", "check the event store end to end with probe events; leaves nothing behind",
             "Write probe events through ingestion's code path into a scratch namespace, read them back "
             "through the trend engine's queries and compare with the pure reference (for InfluxDB also the "
             "buckets and tasks). One line per check; exit 1 when one fails. Safe on a live deployment.")

    bridge = _command(sub, "bridge", "run the Kafka -> Celery bridge until SIGTERM",
                      "Consume KAFKA_TOPIC, publish batches to the ingest queue, dead-letter invalid events; pause "
                      "above BRIDGE_QUEUE_HIGH_WATERMARK, stop while the dead-letter guard holds.")
    bridge.add_argument("bridge_command", nargs="?", choices=("resume",), default=None, metavar="resume",
                        help="lift the dead-letter guard's stop (every bridge of the group resumes) and exit; "
                             "without it: run the bridge")

    dlq = _command(sub, "dlq", "inspect, replay or discard dead letters")
    _dlq_commands(dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION"))
    _run_commands(sub)
    _watch_commands(sub)
    return parser


def _dlq_commands(dlq: _Subparsers) -> None:
    lister = _command(dlq, "list", "print dead letters pending replay, one line each",
                      "Tab-separated: partition@offset, failed at, kind, events, source, attempt, state, reason "
                      "kind, reason; the count on stderr. Resolved letters only with --all (or --parked).")
    shown = lister.add_mutually_exclusive_group()
    shown.add_argument("--all", action="store_true", help="every letter still on the topic, with its state")
    shown.add_argument("--parked", action="store_true", help="only the parked letters")
    lister.add_argument("--limit", type=non_negative_int, default=0, help="print at most N (0: all)")

    show = _command(dlq, "show", "print dead letters in full: reason, source, attempts, state, payload",
                    "The payload as text (a hex dump when not UTF-8; a batch's points as JSON).")
    show.add_argument("positions", nargs="+", type=dlq_position, metavar="PARTITION@OFFSET")

    replayer = _command(dlq, "replay", "validate pending dead letters again and re-publish them",
                        "A letter still invalid is appended again (attempt + 1), or parked after DLQ_MAX_ATTEMPTS. "
                        f"Prints a JSON report. Reason kinds: {', '.join(REASON_KINDS)}.")
    replayer.add_argument("--reason-kind", action="append", default=[], choices=list(REASON_KINDS),
                          metavar="KIND", help="only letters of this reason kind (repeatable)")
    replayer.add_argument("--offsets", action="append", default=[], type=dlq_range, metavar="RANGE",
                          help="only letters in P@O, P@A-B or P@A- (repeatable)")
    replayer.add_argument("--include-parked", action="store_true",
                          help="also take parked letters again (once what parked them is fixed)")
    replayer.add_argument("--dry-run", action="store_true",
                          help="report what a replay would do, letter by letter; publish, append, log nothing")
    replayer.add_argument("--by", default=None, help="who replays, for the triage log (default: the OS user)")

    discard = _command(dlq, "discard", "give up dead letters that cannot succeed, with a record of who and why",
                       "Each letter gets a row in the triage log (who, when, why, a copy). A position with no "
                       "letter, or one already resolved, is refused and nothing is recorded.")
    discard.add_argument("positions", nargs="+", type=dlq_position, metavar="PARTITION@OFFSET")
    discard.add_argument("--reason", required=True, type=non_blank, help="why it cannot succeed (recorded)")
    discard.add_argument("--by", default=None, help="who discards, for the triage log (default: the OS user)")


def _run_commands(sub: _Subparsers) -> None:
    demo = _command(sub, "produce-demo", "produce realistic synthetic events to Kafka")
    demo.add_argument("--events", type=positive_int, default=1000, help="how many events")
    demo.add_argument("--dois", type=positive_int, default=50, help="over how many DOIs (Zipf popularity)")
    demo.add_argument("--hours", type=positive_float, default=6.0, help="spread timestamps over the last H hours")
    demo.add_argument("--seed", type=int, default=7, help="random seed")
    demo.add_argument("--topic", default=None, help="topic (default: KAFKA_TOPIC)")

    dev = _command(sub, "dev", "run the whole product locally on real services (Ctrl-C stops)",
                   "Start Kafka (Tansu), Redis and PostgreSQL from this machine's binaries, then the product; "
                   "produce demo events and print what was trended. Runs from a checkout only.")
    dev.add_argument("--events", type=positive_int, default=5000, help="demo events to produce")
    dev.add_argument("--dois", type=positive_int, default=200, help="DOIs they discuss")
    dev.add_argument("--workdir", default=".devstack", help="where the services keep data and logs")
    dev.add_argument("--keep", action="store_true", help="keep running after the demo until Ctrl-C")
    trends = _command(sub, "trends", "trend runs").add_subparsers(
                      dest="trends_command", required=True, metavar="ACTION")
    names = [d.name for d in DEFAULT_DURATIONS]
    run = _command(trends, "run", "run one trend calculation in this process and print its phases",
                   f"Select the DOIs, compute every chunk, replace the duration's rows, refresh the view: the "
                   f"steps of a scheduled run, under the same overlap lock. Durations: {', '.join(names)}.")
    run.add_argument("duration", choices=names, help="which duration")
    run.add_argument("--at", type=iso_time, default=None,
                     help="compute as of this ISO 8601 time (no offset = UTC; default: now)")

    maintain = _command(sub, "maintain", "partitions ahead, retention, history thinning (PostgreSQL), once",
                        "What the hourly beat task does, in this process, with each step's time. A run already "
                        "in flight: exit 75.")
    maintain.add_argument("--at", type=iso_time, default=None,
                          help="plan as of this ISO 8601 time (no offset = UTC; default: now)")
    maintain.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")

    post = _command(sub, "post", "the morning post: compose today's text and post it to X",
                    "Post the top three trending COVID-19 papers of `today` (once a day); without X "
                    "credentials, or with --dry-run, only print the text.")
    post.add_argument("--dry-run", action="store_true", help="print today's text, post nothing")


def _watch_commands(sub: _Subparsers) -> None:
    schedule = _command(sub, "schedule", "draw the day's plan of every scheduled job: heatmap (SVG) and text",
                        "Every scheduled job on a minute-of-hour x hour-of-day heatmap, with its measured length "
                        "and the overlaps flagged.")
    schedule.add_argument("--output", default="schedule.svg",
                          help="SVG to write; the summary goes to <name>.txt and stdout")
    schedule.add_argument("--date", type=iso_date, default=None,
                          help="the UTC day to plan, YYYY-MM-DD (default: today)")
    schedule.add_argument("--days", type=positive_int, default=7, help="measure run lengths over the last N days")
    schedule.add_argument("--influx-tasks", action=argparse.BooleanOptionalAction, default=None,
                          help="include the InfluxDB tasks (default: when EVENT_STORE=influxdb)")

    exporter = _command(sub, "exporter", "serve the product's state as Prometheus metrics until SIGTERM",
                        "Each scrape reads PostgreSQL (trend runs, the morning post), Redis (queue depths) and "
                        "Kafka (ingest lag, dead letters pending); docs/operating.md lists the metrics.")
    exporter.add_argument("--port", type=positive_int, default=None, help="port (default: EXPORTER_PORT)")

    health = _command(sub, "health", "exit 0 when a component's dependencies answer (container healthcheck)",
                      "One line per check; exit 69 when one fails. Several at once: `aggregator health worker "
                      "trends` (docs/operating.md, \"Health checks\").")
    health.add_argument("component", choices=COMPONENTS, nargs="*", default=["worker"],
                        help="what to check")


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Import the chosen command and run it. The imports are here, not at the top: all the
    commands together load Celery, librdkafka, twitter-text and influxdb-client (about 2 s),
    and `aggregator --help` or a container's health check needs none of them."""
    command: CommandModule
    match args.command:
        case "setup":
            from worker.ops.commands import setup as command
        case "selftest":
            from worker.ops.commands import selftest as command
        case "bridge":
            from worker.ops.commands import bridge as command
        case "dlq":
            from worker.ops.commands import dlq
            actions: dict[str, Command] = {"list": dlq.list_letters, "show": dlq.show_letters,
                                           "replay": dlq.replay_letters, "discard": dlq.discard_letters}
            return actions[args.dlq_command](args, settings)
        case "produce-demo":
            from worker.ops.commands import produce_demo as command
        case "dev":
            from worker.ops.commands import dev as command
        case "trends":
            from worker.ops.commands import trends as command
        case "maintain":
            from worker.ops.commands import maintain as command
        case "post":
            from worker.ops.commands import post as command
        case "schedule":
            from worker.ops.commands import schedule as command
        case "exporter":
            from worker.ops.commands import exporter as command
        case "health":
            from worker.ops.commands import health as command
        case _:
            raise AssertionError(f"no command {args.command!r}")  # the parser accepts only the commands above
    return command.run(args, settings)


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)  # a bad command line exits 2 here, with one line
    debug = bool(args.debug)
    command = " ".join(filter(None, (args.command, getattr(args, "dlq_command", None),
                                     getattr(args, "trends_command", None), getattr(args, "bridge_command", None))))
    settings: Settings | None = None
    try:
        settings = get_settings()
        setup_logging(settings.log_level, settings.log_format)
        if command not in LONG_RUNNING and not debug:
            # A one-shot command reports a failed connection in its own last line;
            # librdkafka's lines about the same failure would only bury it.
            logging.getLogger(KAFKA_LOGGER).setLevel(logging.CRITICAL)
        return run_command(args, settings)
    except KeyboardInterrupt:
        return 130
    except (Exception, ConfigurationError) as error:
        failure = classify(error, settings)
        first, *more = failure.lines()
        print("\n".join([f"aggregator {command}: {first}", *(f"  {line}" for line in more)]), file=sys.stderr)
        if debug:
            traceback.print_exc()
        return exit_code(failure)


if __name__ == "__main__":
    sys.exit(main())
