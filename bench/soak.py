"""Soak: simulated days of operation, time-compressed, to show that a year in changes nothing.

    python -m bench soak [--days 460] [--measure-every N] [--quick] [--durable]
    python -m bench.soak ...                      (the same)

Events arrive at the seeds' rates (``buffer-notebook.txt``: 100 a minute at the busiest,
one an hour at the quietest) on a daily cycle: the rate per minute goes from 1/60 at 03:00
UTC to 100 at 15:00 UTC and back, geometrically (a cosine of the logarithm), about 27,000
events a day; DOIs are drawn with Zipf popularity (``--dois``, 1,000,000 as in
``bench/year_scale.py``). They are written through the product's store (binary COPY,
partitions created as needed) in the batches the bridge would have sent between two jobs.

Every job beat schedules runs at its simulated time, in order, on the same PostgreSQL:
each trend run of the five durations at its cron tick + ``TREND_START_OFFSET_S``
(``aggregator trends run <duration> --at <time>``, in this process: plan, chunks, finalize,
view refresh), and the maintenance task at ``MAINTENANCE_SCHEDULE``
(``aggregator maintain --at <time>``). The morning post is left out: it writes one row a
day.

Each simulated day prints the tables' sizes and row counts and the day's run times. The
summary compares the growth per day before retention starts removing data with the
growth after it, and the run times of the last weeks with those of the weeks before: the
steady state is flat when storage stops growing and run times stop rising.

With the product's defaults (events 400 days, history every run 7 days, hourly to 35 days,
daily to 400 days) the first month of events goes on day ~426 and the first history day
on day 400: the default ``--days 460`` shows a month of the steady state. ``--quick`` (the
suite's smoke test) runs four days with fewer runs (day 1 replayed), a shorter policy and
events seeded a year back, so every kind of step happens at least once in seconds.

Time compression. 460 days hold some 300,000 scheduled trend runs: more than ten hours on
two cores, almost all of it the runs themselves. ``--measure-every N`` runs them for real
on every Nth day (and the last) and, on the days between, replays what they leave behind
(``Replayer``: each run's ``trend_run`` row and its history rows, copied from the last real
run of its duration, at the run's own scheduled time). Events and the maintenance task are
real on every day, so storage, retention and thinning are measured throughout; run times
are measured on the real days.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg2

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line
from tests.support.devstack.services import PostgresServer
from worker.config.settings import Settings
from worker.core.events import Point
from worker.core.partitions import EVENTS, HISTORY
from worker.core.retention import RetentionPolicy
from worker.db.connection import Database
from worker.maintenance.run import maintain
from worker.ops.dayplan.jobs import Job, starts
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns, new_token
from worker.trends.state import PostgresRunState

S = 1_000_000_000
MiB = 1024 * 1024
START = datetime(2025, 1, 1, tzinfo=UTC)
PEAK_PER_MIN, QUIET_PER_MIN = 100.0, 1 / 60
QUIET_HOUR, BATCH = 3.0, 5_000


def rate_per_minute(minute_of_day: np.ndarray) -> np.ndarray:
    """Events per minute: 1/60 at 03:00 UTC, 100 at 15:00, geometric in between."""
    phase = (1 - np.cos(2 * np.pi * (minute_of_day / 60 - QUIET_HOUR) / 24)) / 2
    result: np.ndarray = QUIET_PER_MIN * (PEAK_PER_MIN / QUIET_PER_MIN) ** phase
    return result


class EventSource:
    """Events in simulated time, deterministic for a seed: Poisson counts per minute."""

    def __init__(self, dois: int, seed: int, scale: float = 1.0) -> None:
        self.rng = np.random.default_rng(seed)
        weights = 1.0 / np.arange(1, dois + 1)
        self.cumulative = np.cumsum(weights / weights.sum())
        self.scale = scale
        self.count = 0

    def between(self, start: datetime, stop: datetime) -> Iterator[list[Point]]:
        """Batches of the events in ``[start, stop)`` (whole minutes)."""
        first = int(start.timestamp()) // 60
        minutes = np.arange(first, int(stop.timestamp()) // 60)
        if not len(minutes):
            return
        counts = self.rng.poisson(rate_per_minute(minutes % 1440) * self.scale)
        n = int(counts.sum())
        if not n:
            return
        t_us = (np.repeat(minutes, counts) * 60 + self.rng.uniform(0, 60, n)) * 1e6
        dois = np.minimum(np.searchsorted(self.cumulative, self.rng.random(n)), len(self.cumulative) - 1)
        scores = self.rng.lognormal(2.5, 1.0, n)
        points = [Point(f"s{self.count + i}", f"10.1101/soak.{int(dois[i]):06d}", int(t_us[i]) * 1000,
                        float(scores[i]), 0.1, 100, 120, 0, 1, 2.0, 0.3, 1.0, 1.0, 2.0, 3.0) for i in range(n)]
        self.count += n
        for i in range(0, n, BATCH):
            yield points[i:i + BATCH]


@dataclass
class Day:
    index: int
    day: date
    measured: bool = True  # trend runs run for real (else replayed: see Replayer)
    events_written: int = 0
    runs: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    rows: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    maintenance_s: float = 0.0
    dropped: list[str] = field(default_factory=list)
    thinned: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class Census:
    """Sizes and exact row counts, recounting only the partitions that can have changed."""

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        self.counts: dict[str, int] = {}

    def partitions(self, parent: str) -> list[str]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                        "WHERE i.inhparent = %s::regclass", (parent,))
            return [name for (name,) in cur.fetchall()]

    def take(self, day: Day, hot: set[str]) -> None:
        with self.conn.cursor() as cur:
            for parent in ("discussion_event", "trending_history"):
                names = self.partitions(parent)
                for name in list(self.counts):
                    if name.startswith(parent) and name not in names:
                        del self.counts[name]
                total = 0
                for name in names:
                    if name in hot or name not in self.counts:
                        cur.execute(f'SELECT count(*) FROM "{name}"')
                        self.counts[name] = int(cur.fetchone()[0])
                    total += self.counts[name]
                day.counts[parent] = total
                cur.execute("SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits "
                            "WHERE inhparent = %s::regclass", (parent,))
                day.sizes[parent] = int(cur.fetchone()[0])
            cur.execute("SELECT pg_total_relation_size('trend_run'), pg_database_size(current_database()), "
                        "(SELECT count(*) FROM trend_run)")
            runs_size, database, runs = cur.fetchone()  # type: ignore[misc]
            day.sizes["trend_run"], day.sizes["database"], day.counts["trend_run"] = runs_size, database, runs

    def close(self) -> None:
        self.conn.close()


def day_jobs(day: date, settings: Settings) -> list[tuple[int, str]]:
    """(second of the day, job) for every trend run and maintenance run of ``day``, in order."""
    jobs = [(second, name) for name, d in settings.durations().items()
            for second in starts(Job(name, "trend", d.schedule, settings.trend_start_offset_s), day)]
    jobs += [(second, "maintenance") for second in starts(Job("maintenance", "maintenance",
                                                               settings.maintenance_schedule, 0), day)]
    return sorted(jobs)


_COLUMNS = ("score, count, mean_sentiment, sum_followers, abstract_difference, mean_age, mean_length, "
            "mean_questions, mean_exclamations, mean_bot_rating, mean_score, stddev, ema, kama, ker, "
            "projected_change, trending, mk_trend, mk_p")


class Replayer:
    """The storage a run leaves, without the run: for the days ``--measure-every`` skips.

    A run's lasting traces are its ``trend_run`` row and its rows in ``trending_history``
    (``trending`` and the staging table are replaced, not grown). A replayed run writes both
    as the last real run of its duration wrote them, at its own scheduled time, so the history
    grows, is thinned and is dropped as in operation; only its row count stays that of the last
    measured day (the counts change by under 1% a day once the spans are full).
    """

    def __init__(self, dsn: str) -> None:
        self.conn = psycopg2.connect(dsn)
        self.template: dict[str, tuple[str, datetime]] = {}

    def remember(self, name: str, at: datetime) -> None:
        """The run of ``name`` just finalized at ``at`` is the template of the replayed ones."""
        with self.conn, self.conn.cursor() as cur:
            cur.execute("SELECT run_id FROM trend_run WHERE duration = %s AND calculated_at = %s "
                        "AND status = 'finalized'", (name, at))
            found = cur.fetchone()
        if found:
            self.template[name] = (found[0], at)

    def replay(self, name: str, at: datetime) -> int:
        if name not in self.template:
            return 0
        template, template_at = self.template[name]
        run_id = f"{name}:{at:%Y%m%dT%H%M%S}Z:replayed"
        with self.conn, self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO trending_history (publication_doi, duration, {_COLUMNS}, run_id, calculated_at) "
                        f"SELECT publication_doi, duration, {_COLUMNS}, %s, %s FROM trending_history "
                        # the key's (duration, calculated_at): one day partition, an index range
                        "WHERE duration = %s AND calculated_at = %s AND run_id = %s",
                        (run_id, at, name, template_at, template))
            rows = cur.rowcount
            cur.execute("INSERT INTO trend_run (run_id, duration, calculated_at, status, rows_written) "
                        "VALUES (%s, %s, %s, 'finalized', %s)", (run_id, name, at, rows))
        return int(rows)

    def close(self) -> None:
        self.conn.close()


_STATES: dict[str, PostgresRunState] = {}


def trend_run(settings: Settings, store: PostgresStore, name: str, at: datetime) -> tuple[float, int]:
    """One run as `aggregator trends run NAME --at AT` does it; (seconds, rows)."""
    duration = settings.durations()[name]
    now_ns = datetime_to_ns(at)
    # One run state per database and process, as a worker keeps one (with its staging connection).
    state = _STATES.setdefault(settings.postgres_dsn.get_secret_value(), PostgresRunState.from_settings(settings))
    steps = RunSteps(store, state, chunk_size=settings.trend_chunk_size)
    started = time.perf_counter()
    plan = steps.plan(duration, now_ns, new_token())
    rows = sum(steps.compute_chunk(duration, plan.run_id, now_ns, chunk) for chunk in plan.chunks)
    steps.finalize(duration, plan.run_id, now_ns)
    return time.perf_counter() - started, rows


NAMES = ("currently", "today", "week", "month", "year")


def header() -> str:
    return (f"{'day':>4} {'date':<10} {'ev/day':>7} {'events':>10} {'ev MiB':>7} {'history':>10} {'hist MiB':>8} "
            f"{'runs MiB':>8} {'DB MiB':>7} | " + " ".join(f"{n[:5]:>7}" for n in NAMES)
            + f" {'maint':>6} | rows/run: " + " ".join(f"{n[:4]:>5}" for n in NAMES) + " | dropped, thinned")


def line(d: Day) -> str:
    def ms(name: str) -> str:
        runs = d.runs.get(name, [])
        return f"{statistics.mean(runs) * 1000:7.0f}" if runs else f"{'-':>7}"

    def rows(name: str) -> str:
        found = d.rows.get(name, [])
        return f"{statistics.mean(found):5.0f}" if found else f"{'-':>5}"

    changes = ", ".join(filter(None, (" ".join(d.dropped), f"{len(d.thinned)} thinned" if d.thinned else "",
                                      "" if d.measured else "runs replayed")))
    return (f"{d.index:>4} {d.day:%Y-%m-%d} {d.events_written:>7,} {d.counts['discussion_event']:>10,} "
            f"{d.sizes['discussion_event'] / MiB:>7.0f} {d.counts['trending_history']:>10,} "
            f"{d.sizes['trending_history'] / MiB:>8.0f} {d.sizes['trend_run'] / MiB:>8.1f} "
            f"{d.sizes['database'] / MiB:>7.0f} | " + " ".join(ms(n) for n in NAMES)
            + f" {d.maintenance_s:6.1f} | rows/run: " + " ".join(rows(n) for n in NAMES) + f" | {changes}")


def slope(days: Sequence[Day], key: str) -> float:
    """Least-squares growth per day of ``sizes[key]`` over ``days``, MiB."""
    if len(days) < 2:
        return math.nan
    x = np.array([d.index for d in days], dtype=float)
    y = np.array([d.sizes[key] / MiB for d in days])
    return float(np.polyfit(x, y, 1)[0])


def summary(days: Sequence[Day], window: int) -> list[str]:
    """Growth before and after retention, run times early and late: is the steady state flat?"""
    first_drop = next((d.index for d in days if any(name.startswith("discussion_event") for name in d.dropped)),
                      None)
    first_history_drop = next((d.index for d in days if any(n.startswith("trending_history") for n in d.dropped)),
                              None)
    lines = ["", "summary:",
             f"  first event month dropped on day {first_drop}, first history day dropped on day {first_history_drop}"]
    steady_from = max(filter(None, (first_drop, first_history_drop)), default=None)
    before = [d for d in days if d.index >= 1 and (first_drop is None or d.index < first_drop)][-window:]
    after = [d for d in days if steady_from is not None and d.index >= steady_from]
    for key, label in (("discussion_event", "events"), ("trending_history", "history"), ("trend_run", "trend_run"),
                       ("database", "database")):
        if len(before) < 2 or len(after) < 2:
            continue
        lines.append(f"  {label:<10} growth per day: {slope(before, key):+8.2f} MiB before retention "
                     f"(days {before[0].index if before else '-'}-{before[-1].index if before else '-'}), "
                     f"{slope(after, key):+8.2f} MiB in the steady state "
                     f"(days {after[0].index if after else '-'}-{after[-1].index if after else '-'})")
    if len(after) >= 2:
        peak_early = max(d.sizes["database"] for d in after[:len(after) // 2])
        peak_late = max(d.sizes["database"] for d in after[len(after) // 2:])
        lines.append(f"  database peak: {peak_early / MiB:,.0f} MiB in the first half of the steady state, "
                     f"{peak_late / MiB:,.0f} MiB in the second ({peak_late / peak_early:.3f}x)")
    late = [d for d in days[-window:] if d.measured]  # run times exist on measured days only
    early = [d for d in days[-2 * window:-window] if d.measured] if len(days) >= 2 * window else []
    for name in NAMES:
        a = [t for d in early for t in d.runs.get(name, [])]
        b = [t for d in late for t in d.runs.get(name, [])]
        if a and b:
            lines.append(f"  {name:<9} run: {statistics.mean(a) * 1000:7.0f} ms mean on days {early[0].index}-"
                         f"{early[-1].index}, {statistics.mean(b) * 1000:7.0f} ms on days {late[0].index}-"
                         f"{late[-1].index} ({statistics.mean(b) / statistics.mean(a):.2f}x)")
    return lines


# --quick: a fifth of the runs' schedule, a policy in days instead of months, a year of sparse
# events seeded before day 0, so that creating, dropping and thinning all happen in 4 days.
QUICK_DURATIONS = {"currently": {"schedule": "3 */2 * * *"}, "today": {"schedule": "11 */6 * * *"},
                   "week": {"schedule": "25 */12 * * *"}, "month": {"schedule": "5 0 * * *"}}


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench soak", description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=460, help="simulated days")
    parser.add_argument("--dois", type=int, default=1_000_000, help="DOIs (Zipf popularity)")
    parser.add_argument("--durable", action="store_true",
                        help="PostgreSQL with fsync and synchronous commit (slower; the sizes are the same)")
    parser.add_argument("--event-retention-days", type=int, default=400)
    parser.add_argument("--history", default="7,35,400", help="TREND_HISTORY_FULL,HOURLY,RETENTION_DAYS")
    parser.add_argument("--window", type=int, default=28, help="days compared in the summary")
    parser.add_argument("--preseed-days", type=int, default=0,
                        help="write this many days of events before day 0 (a deployment that ran that long, "
                             "without its runs' history)")
    parser.add_argument("--measure-every", type=int, default=1, metavar="N",
                        help="run the trend runs for real on every Nth day (and the last); "
                             "on the others replay their storage from the last real run (events and "
                             "maintenance are always real)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="two days, fewer runs: the suite's smoke test")
    args = parser.parse_args(argv)
    full, hourly, kept = (int(x) for x in args.history.split(","))
    overrides: dict[str, dict[str, str]] = {}
    scale, preseed_days, preseed_scale = 1.0, args.preseed_days, 1.0
    if args.quick:
        args.days, args.dois, args.window, args.measure_every = 4, 300, 1, 2
        full, hourly, kept, args.event_retention_days = 1, 1, 2, 366
        overrides, scale, preseed_days, preseed_scale = QUICK_DURATIONS, 0.05, 400, 0.0025

    def progress(text: str) -> None:
        print(f"[soak {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _sigterm)  # unwind through `finally`: the PostgreSQL started here stops
    workdir = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    workdir.chmod(0o755)
    pg = PostgresServer(workdir, durable=args.durable).start()
    try:
        from worker.db.migrate import migrate

        migrate(pg.dsn)
        settings = Settings(postgres_dsn=pg.dsn, trend_durations=json.dumps(overrides),
                            event_retention_days=args.event_retention_days, trend_history_full_days=full,
                            trend_history_hourly_days=hourly, trend_history_retention_days=kept)
        policy: RetentionPolicy = settings.retention_policy()
        with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("INSERT INTO publication (doi, title) SELECT format('10.1101/soak.%%s', "
                        "lpad(i::text, 6, '0')), 'Paper ' || i FROM generate_series(0, %s - 1) AS i", (args.dois,))
        conn.close()
        store = PostgresStore.from_settings(settings)  # the product as configured (TREND_QUERY_CONNECTIONS)
        start = START + timedelta(days=preseed_days)
        if preseed_days:
            progress(f"seeding {preseed_days} days of events before day 0 (no runs)")
            seeder = EventSource(args.dois, args.seed + 1, preseed_scale)
            for offset in range(preseed_days):  # a day at a time: a year of Points would not fit in memory
                for points in seeder.between(START + timedelta(days=offset), START + timedelta(days=offset + 1)):
                    store.write(points)
        source = EventSource(args.dois, args.seed, scale)
        census = Census(pg.dsn)
        replayer = Replayer(pg.dsn)
        print(machine_line())
        print(f"PostgreSQL 15, {'durable (fsync on)' if args.durable else 'fsync off (the soak measures growth)'}; "
              f"{args.dois:,} DOIs; policy: events {policy.event_retention_days} d, history every run "
              f"{policy.history_full_days} d, hourly to {policy.history_hourly_days} d, daily to "
              f"{policy.history_retention_days} d; schedule: {json.dumps(overrides) if overrides else 'beat defaults'}"
              f"; trend query connections: {store.query_connections}")
        print("sizes include indexes; run columns are the day's mean wall time in ms, maint the day's seconds")
        print(header(), flush=True)
        days: list[Day] = []
        clock = start
        wall = time.perf_counter()
        for index in range(args.days):
            today = (start + timedelta(days=index)).date()
            day = Day(index, today)
            day.measured = index % args.measure_every == 0 or index == args.days - 1
            hot = {EVENTS.name(EVENTS.range_of(clock)), HISTORY.name(HISTORY.range_of(clock))}
            midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
            for second, job in [*day_jobs(today, settings), (86_400, "")]:
                at = midnight + timedelta(seconds=second)
                for points in source.between(clock, at):
                    store.write(points)
                    day.events_written += len(points)
                clock = at
                if job == "maintenance":
                    report = maintain(Database(pg.dsn), policy, at)
                    day.maintenance_s += report.seconds
                    day.dropped += [s.target for s in report.steps if s.action == "drop" and s.done]
                    day.thinned += [s.target for s in report.steps if s.action.startswith("thin") and s.done]
                elif job and day.measured:
                    seconds, rows = trend_run(settings, store, job, at)
                    day.runs[job].append(seconds)
                    day.rows[job].append(rows)
                    replayer.remember(job, at)
                elif job:
                    day.rows[job].append(replayer.replay(job, at))
            census.take(day, hot | {HISTORY.name(HISTORY.range_of(clock))} | set(day.thinned))
            days.append(day)
            print(line(day), flush=True)
        print("\n".join(summary(days, args.window)))
        print(f"simulated {args.days} days in {time.perf_counter() - wall:,.0f} s of wall time; "
              f"{source.count:,} events written")
        census.close()
        replayer.close()
        store.close()
        return 0
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
