"""The day rollup: trend runs with and without it, and ingest with and without its mark.

    python -m bench.rollup [--sizes 1e6,1e7,3e7] [--dois 1000000] [--orders time,random] [--runs 2] [--quick]

For each write order (``time``: a year of ingestion in time order; ``random``: the same
events shuffled, as a backfill writes them) one durable PostgreSQL 15 database is seeded
*cumulatively* to each size with :func:`bench.year_scale.generate`'s events (Zipf over
``--dois`` DOIs, uniform over 365 days, 1% in the last day) through the product's write
path, then ``VACUUM ANALYZE``, then rolled up as the maintenance task does (timed). At each
size the `year`, `currently` and `today` runs (plan, chunks, finalize, in this process, as
``aggregator trends run`` does them) alternate between the raw path (``TREND_ROLLUP=false``,
the baseline) and the rollup (``TREND_ROLLUP_MIN_EVENTS`` default), ``--runs`` times each;
the table reports the best of each and the `year` DOI lists are checked equal. The `year`
run also runs at ``min_events`` scaled with the events (30 at 10M, 90 at 30M, 3 at 1M), which
under Zipf popularity qualifies about the same DOIs at every size: how its time grows with
the events when the DOIs stay (``fixed DOIs``). Then the
`year` select through the rollup with 0, 30 and 120 of the span's days marked stale, its
fallback to the events off (what ``SELECT_STALE_DAYS_MAX`` weighs).

Ingest: the first size's events are written into two new databases alternately, one batch
at a time, by the product's write path and by the same path with the day mark replaced by a
no-op statement (the baseline), so both see the same machine state.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psycopg2

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import year_scale
from bench.common import machine_line
from tests.support.devstack.services import PostgresServer
from worker.config.settings import Settings
from worker.core import day_rollup
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.store.postgres import rollup, trend_sql
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns
from worker.trends.state import PostgresRunState

S = 1_000_000_000
DEFAULT_MIN_EVENTS: int = Settings.model_fields["trend_rollup_min_events"].default
DURATIONS = [d for d in DEFAULT_DURATIONS if d.name in ("currently", "today", "year")]
FIXED_AT = 10_000_000  # the fixed-DOIs run qualifies about the DOIs the default qualifies at 10M


def fixed_dois(events: int) -> Duration:
    """The `year` duration at ``min_events`` scaled with ``events`` from :data:`FIXED_AT`."""
    scaled = round(year_scale.YEAR.min_events * events / FIXED_AT)
    return dataclasses.replace(year_scale.YEAR, min_events=max(1, scaled))


def progress(text: str) -> None:
    print(f"[rollup {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def ordered(events: year_scale.Events, order: str, seed: int) -> year_scale.Events:
    if order == "time":
        return events
    perm = np.random.default_rng(seed).permutation(len(events.doi))
    return year_scale.Events(events.doi[perm], events.t_us[perm], events.score[perm])


def new_database(pg: PostgresServer, n_dois: int) -> str:
    return year_scale.new_database(pg, f"rollup_{uuid.uuid4().hex[:8]}", n_dois)


def ingest(pg: PostgresServer, events: year_scale.Events, n_dois: int) -> tuple[float, float]:
    """Seconds to write ``events`` with the mark and without (the baseline), batch by batch alternately."""
    with_mark, without = (PostgresStore(new_database(pg, n_dois)) for _ in range(2))
    seconds = [0.0, 0.0]
    for points in year_scale.batches(events):
        for side, store in enumerate((with_mark, without)):
            mark = rollup.MARK_STALE
            if store is without:
                rollup.MARK_STALE = "SELECT 1"  # the same round trip, no row
            started = time.perf_counter()
            try:
                store.write(points)
            finally:
                rollup.MARK_STALE = mark
            seconds[side] += time.perf_counter() - started
    with_mark.close()
    without.close()
    return seconds[0], seconds[1]


@dataclass
class Size:
    order: str
    events: int
    write_s: float
    rollup_s: float
    rollup_rows: int
    best: dict[str, float]  # "<duration> raw|rollup", "fixed raw|rollup" -> best total seconds
    fixed_dois: int  # qualifying DOIs of the fixed-DOIs `year` run
    phases: dict[str, year_scale.Run]  # the year's best run per side
    same_dois: bool
    stale_select: dict[int, float]  # days awaiting their roll-up -> the rollup select's seconds


STALE_DAYS = (0, 30, 120)


def stale_selects(dsn: str, store: PostgresStore, now_ns: int) -> dict[int, float]:
    """The rollup select's best of two with k of the span's days marked stale (a backfill not
    rolled up yet), its fallback to the events off: what SELECT_STALE_DAYS_MAX weighs."""
    days = list(day_rollup.cover(year_scale.YEAR, now_ns, by_window=False).days)
    random.Random(0).shuffle(days)
    limit, trend_sql.SELECT_STALE_DAYS_MAX = trend_sql.SELECT_STALE_DAYS_MAX, len(days)
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    seconds: dict[int, float] = {}
    try:
        with conn.cursor() as cur:
            for k in STALE_DAYS:
                cur.execute("INSERT INTO event_rollup_stale SELECT unnest(%s::date[]) ON CONFLICT DO NOTHING",
                            (days[:k],))
                times = []
                for _ in range(2):
                    started = time.perf_counter()
                    store.qualifying_dois(year_scale.YEAR, now_ns)
                    times.append(time.perf_counter() - started)
                seconds[k] = min(times)
            cur.execute("DELETE FROM event_rollup_stale")
    finally:
        trend_sql.SELECT_STALE_DAYS_MAX = limit
        conn.close()
    return seconds


def measure(dsn: str, order: str, events: int, write_s: float, runs: int, second: list[int]) -> Size:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    conn.autocommit = False
    started = time.perf_counter()
    rolled = rollup.roll_up(conn, year_scale.NOW.date())  # the days that have ended, as maintenance does
    rollup_s = time.perf_counter() - started
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE event_rollup_day")
    conn.close()
    progress(f"{order} {events:,}: rolled up {sum(r.days for r in rolled)} days in {rollup_s:.1f} s")
    stores = {"raw": PostgresStore(dsn, query_connections=year_scale.QUERY_CONNECTIONS),
              "rollup": PostgresStore(dsn, query_connections=year_scale.QUERY_CONNECTIONS,
                                      rollup_min_events=DEFAULT_MIN_EVENTS)}
    state = PostgresRunState(dsn)
    best: dict[str, float] = {}
    phases: dict[str, year_scale.Run] = {}
    dois: dict[str, list[str]] = {}
    fixed = fixed_dois(events)
    fixed_count = 0
    for _ in range(runs):
        for label, duration in [(d.name, d) for d in DURATIONS] + [("fixed", fixed)]:
            for side, store in stores.items():
                timed = year_scale._TimedStore(store)
                second[0] += 1
                now_ns = datetime_to_ns(year_scale.NOW) + second[0] * S
                run = year_scale.timed_run(RunSteps(timed, state, chunk_size=200), timed, duration, now_ns)
                key = f"{label} {side}"
                if run.total_s < best.get(key, float("inf")):
                    best[key] = run.total_s
                    if label == "year":
                        phases[side] = run
                if label == "year":
                    dois[side] = store.qualifying_dois(duration, now_ns)
                if label == "fixed":
                    fixed_count = run.dois
                progress(f"{order} {events:,}: {key} {run.total_s:.2f} s ({run.dois:,} DOIs)")
    stale = stale_selects(dsn, stores["rollup"], datetime_to_ns(year_scale.NOW) + second[0] * S)
    progress(f"{order} {events:,}: the rollup select with 0/30/120 days stale: "
             + "/".join(f"{seconds:.2f}" for seconds in stale.values()) + " s")
    for store in stores.values():
        store.close()
    state.close()
    return Size(order, events, write_s, rollup_s, sum(r.rows for r in rolled), best, fixed_count, phases,
                dois["raw"] == dois["rollup"], stale)


def _pair(a: float, b: float, width: int, digits: int = 2) -> str:
    return f"{a:.{digits}f}/{b:.{digits}f}".rjust(width)


def report(sizes: list[Size], ingest_s: dict[str, tuple[float, float]], n: int) -> list[str]:
    lines = [machine_line(), "PostgreSQL 15, durable defaults, shared_buffers 128 MB; runs in this process, "
             f"TREND_QUERY_CONNECTIONS {year_scale.QUERY_CONNECTIONS}, TREND_ROLLUP_MIN_EVENTS {DEFAULT_MIN_EVENTS}",
             "", f"{'order':<8}{'events':>12}{'write s':>9}{'roll-up s':>10}{'rollup rows':>13}"
             f"{'year raw s':>11}{'year rollup s':>14}{'ratio':>7}{'select raw/rollup':>19}{'chunks raw/rollup':>19}"
             f"{'currently raw/rollup':>22}{'today raw/rollup':>18}{'same DOIs':>10}"]
    for s in sizes:
        raw, rolled = s.phases["raw"], s.phases["rollup"]
        pairs = [_pair(raw.select_s, rolled.select_s, 19), _pair(raw.chunks_s, rolled.chunks_s, 19),
                 _pair(s.best["currently raw"], s.best["currently rollup"], 22, 3),
                 _pair(s.best["today raw"], s.best["today rollup"], 18, 3)]
        lines.append(f"{s.order:<8}{s.events:>12,}{s.write_s:>9.1f}{s.rollup_s:>10.1f}{s.rollup_rows:>13,}"
                     f"{s.best['year raw']:>11.2f}{s.best['year rollup']:>14.2f}"
                     f"{s.best['year raw'] / s.best['year rollup']:>7.2f}{''.join(pairs)}{s.same_dois!s:>10}")
    lines += ["", f"the `year` run at the qualifying DOIs of {FIXED_AT:,} events (min_events scaled with the "
              "events): raw / rollup (s), and x the time of the first size's (same order)"]
    for s in sizes:
        first = next(f for f in sizes if f.order == s.order)
        by_side = [s.best[f"fixed {side}"] for side in ("raw", "rollup")]
        growth = [s.best[f"fixed {side}"] / first.best[f"fixed {side}"] for side in ("raw", "rollup")]
        lines.append(f"  {s.order:<7}{s.events:>12,}  min_events {fixed_dois(s.events).min_events:>4}"
                     f"  {s.fixed_dois:>8,} DOIs  {by_side[0]:.2f} / {by_side[1]:.2f}"
                     f"  ({growth[0]:.2f}x / {growth[1]:.2f}x)")
    lines += ["", "the `year` select with days awaiting their roll-up (the rollup select, its fallback off) / "
              "over the events (s)"]
    for s in sizes:
        lines.append(f"  {s.order:<7}{s.events:>12,}  " + "  ".join(
            f"{k} days {seconds:.2f}" for k, seconds in s.stale_select.items())
            + f"  / events {s.phases['raw'].select_s:.2f}")
    lines += ["", f"ingest of {n:,} events, batches of {year_scale.BATCH:,}: with the day mark / without (events/s)"]
    for order, (marked, plain) in ingest_s.items():
        lines.append(f"  {order:<7} {n / marked:>10,.0f} / {n / plain:>10,.0f}  ({marked / plain:.3f}x the time)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rollup", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7,3e7", help="cumulative event counts")
    parser.add_argument("--dois", type=int, default=1_000_000)
    parser.add_argument("--orders", default="time,random")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="toy sizes (the smoke test)")
    args = parser.parse_args(argv)
    sizes = [20_000, 40_000] if args.quick else [int(float(x)) for x in args.sizes.split(",")]
    n_dois = 2_000 if args.quick else args.dois
    workdir = Path(tempfile.mkdtemp(prefix="bench-rollup-"))
    workdir.chmod(0o755)  # the `postgres` user must enter it
    pg = PostgresServer(workdir, durable=True).start()
    try:
        ingest_s, results, second = {}, [], [0]
        for order in args.orders.split(","):
            first = ordered(year_scale.generate(sizes[0], n_dois, seed=7), order, seed=7)
            progress(f"ingest, {order} order: {sizes[0]:,} events with and without the mark")
            ingest_s[order] = ingest(pg, first, n_dois)
            dsn, have = new_database(pg, n_dois), 0
            for step, target in enumerate(sizes):
                events = ordered(year_scale.generate(target - have, n_dois, seed=42 + step), order, seed=step)
                progress(f"{order}: writing {target - have:,} events (to {target:,})")
                write_s = year_scale.write_product(dsn, events, prefix=f"s{step}e")
                del events
                have = target
                results.append(measure(dsn, order, target, write_s, args.runs, second))
                print("\n".join(report(results, ingest_s, sizes[0])), flush=True)
        return 0
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
