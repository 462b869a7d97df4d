"""The `year` run at scale: a year of events, the product against the layout before it.

    python -m bench.year_scale [--events 10000000] [--dois 1000000] [--quick]

A year of events (10,000,000 on 1,000,000 DOIs by default: Zipf popularity, uniform over
365 days, 1% in the last day, in time order as a year of ingestion writes them) is written
twice on one durable PostgreSQL 15, through the COPY write path in batches of 5,000 (the
bridge's largest batch):

* **baseline**: the layout and trend query before partitioning (migration 0001's table:
  primary key ``event_id``, indexes ``(doi, time)`` and ``(time)``; ``GROUP BY doi, window``
  with numeric epoch arithmetic, rows as text), kept here verbatim;
* **product**: month partitions with the covering ``(doi, time) INCLUDE (…)`` index and the
  trend query of :mod:`worker.store.postgres.store` (float8 sums, integer keys, binary COPY), each
  chunk's query split over ``TREND_QUERY_CONNECTIONS`` (default 2) connections at once; and
  the same database and query on **one connection** (``TREND_QUERY_CONNECTIONS=1``), which
  tells the layout's share of the gain from the second backend's.

Both are then ``VACUUM ANALYZE``d (autovacuum's work in production), and a `year` run
computes in each, phase by phase as ``aggregator trends run year`` does it (in this
process, no Celery): select (qualifying DOIs), chunks of 200 (store query + math +
staging), finalize (publish, history, view refresh). Each side runs ``--runs`` times,
alternating; the table reports every run. The write cost of the product's layout is the
same run's seeding time and the table sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg2

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import machine_line
from tests.support.devstack.services import PostgresServer
from worker.config.settings import Settings
from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.core.events import Point
from worker.store.postgres import copy
from worker.store.postgres import store as product_store
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns, new_token
from worker.trends.state import PostgresRunState

QUERY_CONNECTIONS: int = Settings.model_fields["trend_query_connections"].default

S = 1_000_000_000
US = 1_000
YEAR = next(d for d in DEFAULT_DURATIONS if d.name == "year")
BATCH = 5_000
# The run's time: a whole second, fixed so that a seed fully determines the data.
NOW = datetime(2026, 9, 21, 12, 0, tzinfo=UTC)

# --- the layout and query before partitioning (verbatim from migration 0001 and the store) ---
def _baseline_table() -> str:
    """Migration 0001's own statements for the events table (a migration never changes once
    released), replacing the partitioned table in the baseline's database."""
    migrations = Path(__file__).resolve().parents[1] / "worker" / "db" / "migrations"
    text = (migrations / "0001.events-and-upstream.sql").read_text()
    first = text.index("CREATE TABLE IF NOT EXISTS discussion_event (")
    last = text.index("\n", text.index("CREATE INDEX IF NOT EXISTS discussion_event_time"))
    return "DROP TABLE discussion_event;\n" + text[first:last]


BASELINE_TABLE = _baseline_table()
BASELINE_MERGE = product_store._MERGE.replace("ON CONFLICT (event_id, time)", "ON CONFLICT (event_id)")
_TS = "to_timestamp(0) + ({}::bigint / 1000) * interval '1 microsecond'"
BASELINE_SUMS = {
    "count": "count(*)", "sum_score": "sum(score)", "decayed_score": "sum(score * exp(greatest(%(g)s * age, -700)))",
    "sum_age": "sum(age)", "sum_sentiment": "sum(sentiment_raw)", "sum_followers": "sum(followers)",
    "sum_abstract": "sum(contains_abstract_raw)", "sum_length": "sum(length)", "sum_questions": "sum(questions)",
    "sum_exclamations": "sum(exclamations)", "sum_bot_rating": "sum(bot_rating)",
}
BASELINE_WINDOWS = f"""
    WITH ev AS (
        SELECT doi, score, sentiment_raw, followers, contains_abstract_raw, length, questions,
               exclamations, bot_rating,
               extract(epoch FROM {_TS.format("%(now)s")} - date_trunc('second', time))::bigint AS age
        FROM discussion_event
        WHERE doi = ANY(%(dois)s)
          AND time >= {_TS.format("%(start)s")}
          AND time < {_TS.format("%(stop)s")}
    )
    SELECT doi, (age / %(w)s)::int AS k, {', '.join(f'({e})::float8' for e in BASELINE_SUMS.values())}
    FROM ev GROUP BY doi, k
"""
BASELINE_QUALIFYING = f"""
    SELECT doi FROM discussion_event
    WHERE time >= {_TS.format("%(start)s")} AND time < {_TS.format("%(stop)s")}
    GROUP BY doi HAVING count(*) > %(min)s ORDER BY doi
"""


class BaselineStore(PostgresStore):
    """The store's reads as they were before partitioning (its writes: :func:`write_baseline`)."""

    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        start, stop = alignment.span_range(duration, now_ns)
        return [doi for (doi,) in self._query(BASELINE_QUALIFYING,
                                              {"start": start, "stop": stop, "min": duration.min_events})]

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        index = {doi: i for i, doi in enumerate(dois)}
        n, windows = len(dois), duration.windows
        sums, series = np.zeros((n, len(BASELINE_SUMS))), np.zeros((n, windows))
        start, stop = alignment.span_range(duration, now_ns)
        found = self._query(BASELINE_WINDOWS, {"now": now_ns, "start": start, "stop": stop, "dois": list(dois),
                                               "g": duration.gravity, "w": duration.window_s})
        if found:
            rows_doi = np.fromiter((index[r[0]] for r in found), dtype=np.int64, count=len(found))
            rows_k = np.fromiter((r[1] for r in found), dtype=np.int64, count=len(found))
            values = np.array([r[2:] for r in found], dtype=np.float64)
            np.add.at(sums, rows_doi, values)
            inside = rows_k < windows
            series[rows_doi[inside], windows - 1 - rows_k[inside]] = values[inside, 1]
        return Aggregates(**{name: sums[:, i].copy() for i, name in enumerate(BASELINE_SUMS)}, series=series)


# --- the events ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Events:
    doi: np.ndarray  # DOI rank per event (0 = most popular)
    t_us: np.ndarray  # event time, microseconds since the epoch, ascending
    score: np.ndarray


def generate(n_events: int, n_dois: int, seed: int = 42) -> Events:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, n_dois + 1)
    doi = np.minimum(np.searchsorted(np.cumsum(weights / weights.sum()), rng.random(n_events)), n_dois - 1)
    last_day = rng.random(n_events) < 0.01
    age_s = np.where(last_day, rng.uniform(0, 86_400, n_events), rng.uniform(0, YEAR.span_s, n_events))
    t_us = int(NOW.timestamp()) * 1_000_000 - (age_s * 1e6).astype(np.int64)
    order = np.argsort(t_us, kind="stable")
    return Events(doi[order], t_us[order], rng.uniform(1, 80, n_events)[order])


def doi_name(rank: int) -> str:
    return f"10.1101/year.{rank:07d}"


def batches(events: Events, prefix: str = "e") -> Any:
    """Batches of points; ``prefix`` keeps event ids unique when a database is seeded in steps
    (``bench/scale.py`` adds events to the same year several times)."""
    for start in range(0, len(events.doi), BATCH):
        stop = min(start + BATCH, len(events.doi))
        yield [Point(f"{prefix}{i}", doi_name(int(events.doi[i])), int(events.t_us[i]) * US, float(events.score[i]),
                     0.1, 100, 120, 0, 1, 2.0, 0.3, 1.0, 1.0, 2.0, 3.0) for i in range(start, stop)]


def write_baseline(dsn: str, events: Events) -> float:
    """The old write path: the same binary COPY into a staging table, the old merge."""
    conn = psycopg2.connect(dsn)
    started = time.perf_counter()
    for points in batches(events):
        with conn, conn.cursor() as cur:
            cur.execute(copy.STAGING)
            cur.copy_expert(copy.COPY, copy.copy_buffer(points))
            cur.execute(BASELINE_MERGE)
    conn.close()
    return time.perf_counter() - started


def write_product(dsn: str, events: Events, prefix: str = "e") -> float:
    store = PostgresStore(dsn)
    started = time.perf_counter()
    for points in batches(events, prefix):
        store.write(points)
    store.close()
    return time.perf_counter() - started


# --- one run ---------------------------------------------------------------------------------
@dataclass
class Run:
    select_s: float
    chunks_s: float
    finalize_s: float
    dois: int
    chunks: int
    rows: int
    query_s: float = 0.0  # of chunks_s: the store's trend_inputs

    @property
    def total_s(self) -> float:
        return self.select_s + self.chunks_s + self.finalize_s


@dataclass
class Side:
    name: str
    dsn: str
    store: PostgresStore
    write_s: float = 0.0
    vacuum_s: float = 0.0
    sizes: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)


class _TimedStore:
    """Times the store's trend_inputs inside compute_chunk (the rest is math and staging)."""

    def __init__(self, store: PostgresStore) -> None:
        self.store, self.seconds = store, 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        started = time.perf_counter()
        try:
            return self.store.trend_inputs(duration, now_ns, dois)
        finally:
            self.seconds += time.perf_counter() - started


_STATES: dict[str, PostgresRunState] = {}


def run_year(side: Side, second: int) -> Run:
    """One `year` run at NOW + ``second`` seconds (a later run, so its finalize publishes)."""
    settings = Settings(postgres_dsn=side.dsn)
    now_ns = datetime_to_ns(NOW) + second * S
    store = _TimedStore(side.store)
    # One run state per database and process, as a worker keeps one (with its staging connection).
    state = _STATES.setdefault(side.dsn, PostgresRunState(side.dsn))
    steps = RunSteps(store, state, chunk_size=settings.trend_chunk_size)
    return timed_run(steps, store, YEAR, now_ns)


def timed_run(steps: RunSteps, store: _TimedStore, duration: Duration, now_ns: int) -> Run:
    """One run of ``duration`` through the product's steps (``steps`` reads through ``store``),
    each phase timed; also `python -m bench scale`'s unit of the year measurement."""
    store.seconds = 0.0
    t0 = time.perf_counter()
    plan = steps.plan(duration, now_ns, new_token())
    t1 = time.perf_counter()
    rows = sum(steps.compute_chunk(duration, plan.run_id, now_ns, chunk) for chunk in plan.chunks)
    t2 = time.perf_counter()
    steps.finalize(duration, plan.run_id, now_ns)
    t3 = time.perf_counter()
    return Run(t1 - t0, t2 - t1, t3 - t2, plan.dois, len(plan.chunks), rows, store.seconds)


def _last_runs(sides: list[Side]) -> list[int]:
    """Seconds after NOW of the runs a reused database already published (a new run must be later)."""
    found = []
    for side in sides:
        with psycopg2.connect(side.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT max(calculated_at) FROM trend_run")
            (latest,) = cur.fetchone() or (None,)
        conn.close()
        if latest is not None:
            found.append(int((latest - NOW).total_seconds()))
    return found


def sizes(dsn: str) -> dict[str, int]:
    """Bytes of the events: table (all partitions), each index kind, total."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        # An index of a partition counts under its parent's (partitioned) index.
        cur.execute("""
            SELECT CASE WHEN c.relkind = 'r' THEN 'table'
                        ELSE coalesce(p.relname, c.relname) END,
                   sum(pg_relation_size(c.oid))
            FROM pg_class c
            LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND c.relkind = 'i'
            LEFT JOIN pg_class p ON p.oid = i.inhparent
            WHERE c.relname LIKE 'discussion_event%%' AND c.relkind IN ('r', 'i')
            GROUP BY 1 ORDER BY 1""")
        found = {name: int(size) for name, size in cur.fetchall()}
    conn.close()
    found["total"] = sum(found.values())
    return found


def new_database(pg: PostgresServer, name: str, n_dois: int) -> str:
    """A migrated database ``name`` in which every DOI has its publication, as in amba (the
    finalize matches rows to them); its DSN."""
    from worker.db.migrate import migrate

    admin = psycopg2.connect(pg.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()
    dsn = pg.dsn_for(name)
    migrate(dsn)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("INSERT INTO publication (doi, title) SELECT format('10.1101/year.%%s', lpad(i::text, 7, '0')), "
                    "'Paper ' || i FROM generate_series(0, %s - 1) AS i", (n_dois,))
    conn.close()
    return dsn


def prepare(pg: PostgresServer, name: str, events: Events, baseline: bool, n_dois: int, progress: Any) -> Side:
    dsn = new_database(pg, name, n_dois)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        if baseline:
            cur.execute(BASELINE_TABLE)
    conn.close()
    side = Side(name, dsn, BaselineStore(dsn) if baseline else PostgresStore(dsn, query_connections=QUERY_CONNECTIONS))
    progress(f"{name}: writing {len(events.doi):,} events in batches of {BATCH:,}")
    side.write_s = (write_baseline if baseline else write_product)(dsn, events)
    progress(f"{name}: written in {side.write_s:.1f} s; VACUUM ANALYZE")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    started = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    side.vacuum_s = time.perf_counter() - started
    conn.close()
    side.sizes = sizes(dsn)
    return side


def report(sides: list[Side], events: int, dois: int, single: Side) -> list[str]:
    """The run table (baseline, product, product on one connection), then the write cost."""
    base, product = sides
    mib = 1024 * 1024
    lines = [machine_line(), "PostgreSQL 15, durable defaults (fsync=on, synchronous_commit=on), shared_buffers 128 MB",
             f"events: {events:,} on {dois:,} DOIs (Zipf), uniform over 365 days + 1% in the last day, time order; "
             f"run `year` at {NOW.isoformat()}", "",
             f"{'year run':<30}{'select s':>10}{'chunks s':>10}{'(query s)':>11}{'finalize s':>12}{'total s':>10}"
             f"{'DOIs':>9}{'chunks':>8}"]
    for side in (*sides, single):
        for i, r in enumerate(side.runs, 1):
            lines.append(f"{side.name + f' run {i}':<30}{r.select_s:>10.2f}{r.chunks_s:>10.2f}{r.query_s:>11.2f}"
                         f"{r.finalize_s:>12.2f}{r.total_s:>10.2f}{r.dois:>9,}{r.chunks:>8}")
    best_base = min(r.total_s for r in base.runs)
    best_product = min(r.total_s for r in product.runs)
    best_single = min(r.total_s for r in single.runs)
    lines += ["", f"year run, best of {len(product.runs)}: product {best_product:.2f} s "
                  f"({product.store.query_connections} connections) | product on 1 connection {best_single:.2f} s | "
                  f"baseline {best_base:.2f} s | {best_base / best_product:.1f}x faster than the baseline, "
                  f"{best_single / best_product:.2f}x faster than 1 connection (target <= 12 s: "
                  f"{'met' if best_product <= 12 else 'MISSED'})", "",
              f"{'write cost':<22}{'write s':>10}{'ev/s':>10}{'vacuum s':>10}{'table MiB':>11}{'indexes MiB':>12}"
              f"{'total MiB':>11}"]
    for side in sides:
        indexes = side.sizes["total"] - side.sizes.get("table", 0)
        lines.append(f"{side.name:<22}{side.write_s:>10.1f}{events / side.write_s:>10,.0f}{side.vacuum_s:>10.1f}"
                     f"{side.sizes.get('table', 0) / mib:>11,.0f}{indexes / mib:>12,.0f}"
                     f"{side.sizes['total'] / mib:>11,.0f}")
    lines.append(f"product / baseline: write time {product.write_s / base.write_s:.2f}x, storage "
                 f"{product.sizes['total'] / base.sizes['total']:.2f}x")
    for side in sides:
        lines.append(f"  {side.name} indexes: " + ", ".join(
            f"{name} {size / mib:,.0f} MiB" for name, size in side.sizes.items() if name not in ("table", "total")))
    return lines


def _sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.year_scale", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--dois", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2, help="year runs per side, alternating")
    parser.add_argument("--quick", action="store_true", help="20,000 events on 2,000 DOIs (the suite's smoke test)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the seeded PostgreSQL in DIR; a later run with the same DIR reuses it (no "
                             "seeding: the write-cost figures are the first run's)")
    args = parser.parse_args(argv)
    n_events, n_dois = (20_000, 2_000) if args.quick else (args.events, args.dois)

    def progress(text: str) -> None:
        print(f"[year_scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, _sigterm)  # unwind through `finally`: the PostgreSQL started here stops
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="bench-year-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)
    seeded = workdir / "seeded.json"
    pg = PostgresServer(workdir, durable=True).start()  # a kept data directory starts again on a free port
    try:
        if seeded.exists() and json.loads(seeded.read_text())["events"] == [n_events, n_dois]:
            progress(f"reusing the seeded databases in {workdir}")
            sides = [Side(**{**side, "store": BaselineStore(pg.dsn_for(side["name"])) if side["name"] == "baseline"
                             else PostgresStore(pg.dsn_for(side["name"]), query_connections=QUERY_CONNECTIONS),
                             "dsn": pg.dsn_for(side["name"]), "runs": []})
                     for side in json.loads(seeded.read_text())["sides"]]
        else:
            progress(f"generating {n_events:,} events on {n_dois:,} DOIs")
            events = generate(n_events, n_dois)
            sides = [prepare(pg, "baseline", events, True, n_dois, progress),
                     prepare(pg, "product", events, False, n_dois, progress)]
            if args.keep:
                seeded.write_text(json.dumps({"events": [n_events, n_dois], "sides": [
                    {"name": s.name, "write_s": s.write_s, "vacuum_s": s.vacuum_s, "sizes": s.sizes} for s in sides]}))
        product = sides[1]
        single = Side("product, 1 connection", product.dsn, PostgresStore(product.dsn, query_connections=1))
        previous = max(_last_runs(sides), default=-1)
        for i in range(args.runs):
            for side in (*sides, single):
                progress(f"{side.name}: year run {i + 1}")
                side.runs.append(run_year(side, previous + 1 + 2 * i + (side is single)))
        for side in (*sides, single):
            side.store.close()
        print("\n".join(report(sides, n_events, n_dois, single)))
        return 0
    finally:
        pg.stop()
        if not args.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)


if __name__ == "__main__":
    sys.exit(main())

