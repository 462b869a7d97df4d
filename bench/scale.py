"""Scaling: how ingest grows with bridges and workers, how the `year` run grows with events.

    python -m bench scale [ingest|year|all] [--quick] [--events N] [--year-sizes 1e6,1e7,3e7] ...

Nobody could size a deployment from one 10M-event point and one 1-bridge/1-worker figure,
so this measures the two curves a sizing needs, each against a baseline measured in the
same run:

* **ingest** (baseline: 1 bridge / 1 worker). The real processes, as deployed: Tansu,
  Redis and durable PostgreSQL from ``tests.support.devstack`` (via :class:`bench.common.Stack`),
  ``aggregator bridge`` and ``celery worker -Q ingest -c 2`` processes. ``--events`` events
  wait in one topic of ``--partitions`` partitions (produced once, not timed); each
  configuration (1/1, 2 bridges/1 worker, 1 bridge/2 workers, 2/2) drains it with a new
  consumer group into a new database. The clock starts once every bridge has its
  partitions and ``--start-fraction`` of the events are stored (start-up and the group
  join are the same fixed cost in every configuration and would blur the rate) and stops
  at the last event stored. Over exactly that interval the CPU of each component's
  process tree is read (``/proc/<pid>/stat`` through psutil: own time of every live
  process plus the time of children it reaped, so a PostgreSQL backend that exits is not
  lost), giving CPU µs per event per component: what a host must supply per event,
  whatever this machine's two cores let the configurations show.
* **year** (baseline: the smallest size). One durable PostgreSQL 15 seeded *cumulatively*
  (1M, then +9M, then +20M events by default, so the 30M point costs 20M writes, not 30M),
  each step the events of :func:`bench.year_scale.generate` (Zipf over ``--dois`` DOIs,
  uniform over 365 days, 1% in the last day, in time order within the step) written
  through the product's COPY path, then ``VACUUM ANALYZE`` (autovacuum's job). At each
  size the product's `year` run (plan, chunks, finalize, phase by phase as
  ``aggregator trends run year`` does it, in this process) runs once per ``--min-events``
  threshold: the default 30 and a lower one, which qualifies more DOIs on the same events
  and so separates the cost per event (the select scans them all) from the cost per
  qualifying DOI (chunks: an index probe, the math and staging per DOI). Each runs
  ``--year-runs`` times (2), alternating; the table reports the best and lists every run.

``--quick`` runs toy sizes for the smoke test (``tests/bench/test_scale.py``), which checks
the report's shape, never its timings.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import FrameType

import psycopg2

from bench import year_scale
from bench.common import (
    AGGREGATOR,
    CELERY,
    BenchError,
    Processes,
    RowCounter,
    Stack,
    cpu_seconds,
    find_log_line,
    generate_events,
    machine_busy_seconds,
    machine_line,
    postmaster_pid,
    produce_fast,
    wait_for,
)
from tests.support.devstack.services import PostgresServer
from worker.core.durations import Duration
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns
from worker.trends.state import PostgresRunState

MiB = 1024 * 1024
S = 1_000_000_000

# The bench's ingest settings (bench/ingest.py says why each), with the rate limit raised:
# INGEST_RATE_LIMIT is the store's write limit in *batches*, one token bucket in Redis shared
# by every ingest worker (default 20/s); at 10,000 batches/s the workers could start far
# more batches than any configuration here delivers (the batches hold hundreds to 5,000
# events), so the limit never caps a figure (it still costs its one Redis call per batch).
SCALE_SETTINGS: dict[str, str] = {
    "INGEST_RATE_LIMIT": "10000/s",
    "BRIDGE_TARGET_INTERVAL_S": "0.25",
    "BRIDGE_RATE_HALF_LIFE_S": "1",
    "BRIDGE_MAX_BATCH": "5000",
    "BRIDGE_MAX_BATCH_AGE_S": "0.5",
}
WORKER_CONCURRENCY = 2  # per worker process, as in bench/ingest.py and the compose file's worker
COMPONENTS = ("bridge", "ingest worker", "PostgreSQL", "Redis", "Tansu", "bench poller")


def progress(text: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def load_average() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# --- ingest ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    bridges: int
    workers: int

    @property
    def label(self) -> str:
        return f"{self.bridges} bridge{'s' if self.bridges > 1 else ''} / {self.workers} worker" + \
            ("s" if self.workers > 1 else "")


CONFIGS = (Config(1, 1), Config(2, 1), Config(1, 2), Config(2, 2))


@dataclass
class IngestRun:
    config: Config
    events: int  # stored within the measured interval
    seconds: float
    cpu: dict[str, float]  # component -> CPU seconds within the interval
    machine: float  # the whole machine's busy CPU seconds within the interval
    load: str
    assignments: int  # `partitions assigned` lines over all bridges (> bridges: a rebalance)
    batches: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def us_per_event(self, component: str) -> float:
        return self.cpu[component] / self.events * 1e6

    @property
    def total_us(self) -> float:
        return sum(self.cpu[c] for c in COMPONENTS if c != "bench poller") / self.events * 1e6

    @property
    def own_cores(self) -> float:
        return sum(self.cpu.values()) / self.seconds


def _assigned(procs: Processes, bridge: subprocess.Popen) -> bool:
    return find_log_line(procs.log_text(bridge), "partitions assigned") is not None


def run_config(stack: Stack, procs: Processes, topic: str, total: int, config: Config,
               start_fraction: float) -> IngestRun:
    """Drain the topic with ``config``'s processes into a new database; time the middle."""
    dsn = stack.fresh_database("scale")
    stack.flush_redis()
    env = stack.env(topic=topic, dsn=dsn, **SCALE_SETTINGS)  # one group id: the bridges share the partitions
    counter = RowCounter(dsn)
    bridges: list[subprocess.Popen] = []
    workers: list[subprocess.Popen] = []
    try:
        for i in range(config.bridges):
            bridges.append(procs.spawn([*AGGREGATOR, "bridge"], env, f"bridge-{config.bridges}-{config.workers}-{i}"))
        for i in range(config.workers):
            workers.append(procs.spawn(
                [*CELERY, "worker", "-Q", "ingest", "-c", str(WORKER_CONCURRENCY),
                 "-n", f"scale-{i}-{uuid.uuid4().hex[:6]}@localhost", "--without-mingle", "--without-gossip",
                 "-l", "warning"], env, f"worker-{config.bridges}-{config.workers}-{i}"))

        def alive() -> None:
            procs.check_alive(*bridges, *workers)

        timeout = 120 + total / 500
        wait_for(lambda: all(_assigned(procs, b) for b in bridges), timeout, "every bridge assigned", alive=alive)
        start_at = max(1, int(total * start_fraction))
        wait_for(lambda: counter() >= start_at, timeout, f"{start_at:,} events stored", interval=0.05, alive=alive)

        def snapshot() -> dict[str, float]:
            assert stack.kafka.proc is not None and stack.redis.proc is not None
            return {
                "bridge": sum(cpu_seconds(b.pid, reaped=True) for b in bridges),
                "ingest worker": sum(cpu_seconds(w.pid, reaped=True) for w in workers),
                "PostgreSQL": cpu_seconds(postmaster_pid(stack.pg), reaped=True),
                "Redis": cpu_seconds(stack.redis.proc.pid, reaped=True),
                "Tansu": cpu_seconds(stack.kafka.proc.pid, reaped=True),
                # This process alone (the row counting): its children are measured above.
                "bench poller": cpu_seconds(os.getpid(), children=False),
            }

        machine0, cpu0, n0, t0 = machine_busy_seconds(), snapshot(), counter(), time.monotonic()
        load = load_average()
        t1 = counter.wait_for_rows(total, timeout, alive)
        cpu1, machine1 = snapshot(), machine_busy_seconds()
        stored = counter()
        if stored != total:
            raise BenchError(f"{config.label}: {stored:,} events stored, expected {total:,}")
        (batches,) = counter.query("SELECT count(DISTINCT ingested_at) FROM discussion_event")
        assignments = sum(procs.log_text(b).count("partitions assigned") for b in bridges)
        return IngestRun(config, total - n0, t1 - t0, {c: cpu1[c] - cpu0[c] for c in COMPONENTS},
                         machine1 - machine0, load, assignments, int(batches))
    finally:
        for proc in (*bridges, *workers):
            procs.terminate(proc, timeout=15)
        counter.close()


@dataclass
class IngestResult:
    events: int
    partitions: int
    produce_s: float
    runs: list[IngestRun] = field(default_factory=list)


def run_ingest(events: int, partitions: int, start_fraction: float, keep_logs: bool) -> IngestResult:
    progress(f"generating {events:,} events")
    payloads = generate_events(events, 5_000, 7)
    progress("starting Tansu, Redis, PostgreSQL (durable)")
    stack = Stack.start(durable=True)
    failed = True
    try:
        topic = stack.fresh_topic("scale", partitions=partitions)
        produce_s = produce_fast(stack.kafka.bootstrap, topic, payloads)
        result = IngestResult(events, partitions, produce_s)
        procs = Processes(stack.root / "logs" / f"scale-{os.getpid()}")
        try:
            for config in CONFIGS:
                progress(f"ingest: {config.label}, load {load_average()}")
                result.runs.append(run_config(stack, procs, topic, events, config, start_fraction))
                progress(f"  {result.runs[-1].rate:,.0f} ev/s")
        finally:
            procs.close()
        failed = False
        return result
    finally:
        stack.close(keep_logs=keep_logs or failed)


def ingest_lines(result: IngestResult, start_fraction: float) -> list[str]:
    base = result.runs[0]
    cores = os.cpu_count() or 1
    lines = [
        f"ingest scaling: {result.events:,} events waiting in a {result.partitions}-partition topic (loading it, not "
        f"timed: {result.produce_s:.1f} s); each configuration drains it into a new database with a new consumer "
        f"group; timed from {start_fraction:.0%} stored (every bridge assigned) to the last event stored; baseline "
        f"1 bridge / 1 worker in the same run",
        "  settings: " + " ".join(f"{k}={v}" for k, v in SCALE_SETTINGS.items())
        + f"; each worker -Q ingest -c {WORKER_CONCURRENCY}; PostgreSQL durable defaults (fsync=on, "
        "synchronous_commit=on); INGEST_RATE_LIMIT raised so it never caps (default 20/s)",
        "",
        f"  {'configuration':<22}{'events':>9}{'s':>7}{'ev/s':>9}{'ratio':>8}"
        + "".join(f"{c + ' µs/ev':>{max(14, len(c) + 7)}}" for c in COMPONENTS)
        + f"{'total µs/ev':>13}{'own cores':>11}{'others':>8}{'batches':>9}{'assigned':>10}  load 1/5/15 min",
    ]
    for r in result.runs:
        others = max(0.0, r.machine - sum(r.cpu.values())) / r.seconds
        lines.append(
            f"  {r.config.label:<22}{r.events:>9,}{r.seconds:>7.2f}{r.rate:>9,.0f}{r.rate / base.rate:>7.2f}x"
            + "".join(f"{r.us_per_event(c):>{max(14, len(c) + 7)}.1f}" for c in COMPONENTS)
            + f"{r.total_us:>13.1f}{r.own_cores:>11.2f}{others:>8.2f}{r.batches:>9,}{r.assignments:>10}  {r.load}")
    # max(): at toy sizes (--quick) a component may use less than one clock tick in the interval.
    per_core = 1e6 / max(base.total_us, 1e-9)
    bridge_max = 1e6 / max(base.us_per_event("bridge"), 1e-9)
    lines += [
        "",
        f"  per-host capacity (from the 1/1 baseline's CPU, not its rate): {base.total_us:.1f} µs of CPU per event "
        f"over all components -> {per_core:,.0f} ev/s per fully busy core, {per_core * cores:,.0f} ev/s on this "
        f"{cores}-core machine; a bridge process ({base.us_per_event('bridge'):.1f} µs/ev, one Python thread) "
        f"tops out near {bridge_max:,.0f} ev/s; PostgreSQL {base.us_per_event('PostgreSQL'):.1f} µs/ev, "
        f"worker {base.us_per_event('ingest worker'):.1f} µs/ev",
        f"  all {len(result.runs)} configurations share {cores} cores: a second process can only add throughput where "
        "a core idles; the ratios show what splitting costs or gains here, the µs/ev what a host must supply",
    ]
    return lines


# --- year ----------------------------------------------------------------------------------------
@dataclass
class YearRun(year_scale.Run):
    """A timed run (year_scale's) with the threshold it ran at and the load at its start."""

    min_events: int = 0
    load: str = ""


@dataclass
class YearSize:
    events: int
    added: int
    write_s: float
    vacuum_s: float
    events_bytes: int
    database_bytes: int
    runs: list[YearRun] = field(default_factory=list)

    def best(self, min_events: int) -> YearRun:
        """The fastest run at a threshold: the first run after seeding reads pages the
        seeding pushed out of the cache (measured: its select up to 1.8x the second's)."""
        return min((r for r in self.runs if r.min_events == min_events), key=lambda r: r.total_s)

    def totals(self, min_events: int) -> str:
        return "/".join(f"{r.total_s:.2f}" for r in self.runs if r.min_events == min_events)


def _year_run(steps: RunSteps, timed: year_scale._TimedStore, duration: Duration, second: int,
              load: str) -> YearRun:
    run = year_scale.timed_run(steps, timed, duration, datetime_to_ns(year_scale.NOW) + second * S)
    return YearRun(**asdict(run), min_events=duration.min_events, load=load)


def _database_bytes(dsn: str) -> int:
    with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        row = cur.fetchone()
    return int(row[0]) if row else 0


def run_year(sizes: Sequence[int], n_dois: int, thresholds: Sequence[int], runs: int,
             keep: Path | None) -> list[YearSize]:
    workdir = keep or Path(tempfile.mkdtemp(prefix="bench-scale-year-"))
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o755)  # the `postgres` user must enter it
    pg = PostgresServer(workdir, durable=True).start()
    results: list[YearSize] = []
    store: PostgresStore | None = None
    state: PostgresRunState | None = None
    try:
        dsn = year_scale.new_database(pg, f"scale_{uuid.uuid4().hex[:8]}", n_dois)
        store = PostgresStore(dsn, query_connections=year_scale.QUERY_CONNECTIONS)
        timed = year_scale._TimedStore(store)
        state = PostgresRunState(dsn)
        steps = RunSteps(timed, state, chunk_size=200)  # the store, its trend_inputs timed
        have, second = 0, 0
        for step, target in enumerate(sizes):
            added = target - have
            progress(f"year: generating {added:,} events (step {step + 1}, to {target:,})")
            events = year_scale.generate(added, n_dois, seed=42 + step)
            progress(f"year: writing {added:,} events, load {load_average()}")
            write_s = year_scale.write_product(dsn, events, prefix=f"s{step}e")
            del events
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            t0 = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("VACUUM ANALYZE")
            vacuum_s = time.perf_counter() - t0
            conn.close()
            have = target
            size = YearSize(target, added, write_s, vacuum_s, year_scale.sizes(dsn)["total"], _database_bytes(dsn))
            for i in range(runs):  # alternating thresholds, so both see the same cache states
                for threshold in thresholds:
                    duration = replace(year_scale.YEAR, min_events=threshold)
                    load = load_average()
                    progress(f"year: run {i + 1} at {target:,} events, min_events {threshold}, load {load}")
                    second += 1
                    size.runs.append(_year_run(steps, timed, duration, second, load))
                    progress(f"  {size.runs[-1].total_s:.2f} s, {size.runs[-1].dois:,} DOIs")
            results.append(size)
        return results
    finally:
        if store is not None:
            store.close()
        if state is not None:
            with contextlib.suppress(Exception):
                state.close()
        pg.stop()
        if keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares line ``y = a + b x``: (a, b)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0
    return my - b * mx, b


def year_lines(results: list[YearSize], n_dois: int, thresholds: Sequence[int]) -> list[str]:
    default = thresholds[0]
    base = results[0].best(default)
    lines = [
        f"year run against events: one durable PostgreSQL 15 (shared_buffers 128 MB), seeded cumulatively "
        f"({' -> '.join(f'{r.events:,}' for r in results)} events, Zipf over {n_dois:,} DOIs, uniform over 365 days "
        f"+ 1% in the last day) through the COPY write path, VACUUM ANALYZE after each step; TREND_QUERY_CONNECTIONS "
        f"{year_scale.QUERY_CONNECTIONS}, chunks of 200; baseline: {results[0].events:,} events, min_events {default}, "
        "same run; each row the best of the runs listed (alternating thresholds), its load at its start",
        "",
        f"  {'events':>12}{'min_events':>11}{'DOIs':>9}{'chunks':>7}{'select s':>10}{'chunks s':>10}{'(query s)':>11}"
        f"{'finalize s':>11}{'total s':>9}{'x events':>10}{'x DOIs':>8}{'x time':>8}  {'runs s':<14}load 1/5/15 min",
    ]
    for size in results:
        for threshold in thresholds:
            r = size.best(threshold)
            lines.append(
                f"  {size.events:>12,}{r.min_events:>11}{r.dois:>9,}{r.chunks:>7}{r.select_s:>10.2f}{r.chunks_s:>10.2f}"
                f"{r.query_s:>11.2f}{r.finalize_s:>11.2f}{r.total_s:>9.2f}{size.events / results[0].events:>9.1f}x"
                f"{r.dois / max(1, base.dois):>7.1f}x{r.total_s / base.total_s:>7.2f}x  "
                f"{size.totals(threshold):<14}{r.load}")
    main = [(s.events, s.best(default)) for s in results]
    if len(main) > 1:
        a, b = _slope([e / 1e6 for e, _ in main], [r.total_s for _, r in main])
        sa, sb = _slope([e / 1e6 for e, _ in main], [r.select_s for _, r in main])
        lines += ["", f"  fitted over the sizes (min_events {default}): total = {a:.2f} s + {b:.3f} s per million "
                      f"events; select = {sa:.2f} s + {sb:.3f} s per million events"]
    pairs = []
    for size in results:
        if len(thresholds) > 1:
            hi, lo = size.best(default), size.best(thresholds[-1])
            if lo.dois != hi.dois:
                per_doi_ms = (lo.chunks_s - hi.chunks_s) / (lo.dois - hi.dois) * 1e3
                pairs.append(f"{size.events:,} events: {per_doi_ms:.2f} ms "
                             f"of chunks per extra qualifying DOI ({hi.dois:,} -> {lo.dois:,} DOIs)")
    if pairs:
        lines.append("  same events, more qualifying DOIs (min_events lowered): " + "; ".join(pairs))
    lines += ["", f"  {'writing':<10}{'events':>12}{'added':>12}{'write s':>9}{'ev/s':>9}{'vacuum s':>10}"
                  f"{'events MiB':>12}{'database MiB':>14}{'bytes/event':>13}"]
    for s in results:
        lines.append(f"  {'':<10}{s.events:>12,}{s.added:>12,}{s.write_s:>9.1f}{s.added / s.write_s:>9,.0f}"
                     f"{s.vacuum_s:>10.1f}{s.events_bytes / MiB:>12,.0f}{s.database_bytes / MiB:>14,.0f}"
                     f"{s.events_bytes / s.events:>13,.0f}")
    return lines


# --- command -------------------------------------------------------------------------------------
def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind through every `finally`: what was started stops


def _ints(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("ingest", "year", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="toy sizes (the smoke test)")
    parser.add_argument("--events", type=int, help="ingest: events per configuration (default 300,000)")
    parser.add_argument("--partitions", type=int, default=4, help="ingest: partitions of the topic")
    parser.add_argument("--start-fraction", type=float, default=0.1,
                        help="ingest: the clock starts when this share of the events is stored")
    parser.add_argument("--year-sizes", type=_ints, help="year: cumulative sizes (default 1e6,1e7,3e7)")
    parser.add_argument("--dois", type=int, help="year: DOI population (default 1,000,000)")
    parser.add_argument("--min-events", type=_ints,
                        help="year: min_events thresholds, the first the baseline's (default 30,10)")
    parser.add_argument("--year-runs", type=int, default=2, help="year: runs per size and threshold (best reported)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="year: keep the seeded PostgreSQL in DIR")
    parser.add_argument("--keep-logs", action="store_true", help="ingest: keep the processes' logs")
    args = parser.parse_args(argv)
    events = args.events or (20_000 if args.quick else 300_000)
    sizes = args.year_sizes or ([20_000, 40_000, 60_000] if args.quick else [1_000_000, 10_000_000, 30_000_000])
    n_dois = args.dois or (2_000 if args.quick else 1_000_000)
    thresholds = args.min_events or [30, 10]
    if sorted(sizes) != list(sizes) or len(set(sizes)) != len(sizes):
        parser.error("--year-sizes must increase (the database is seeded cumulatively)")
    signal.signal(signal.SIGTERM, _sigterm)
    lines = [machine_line(), f"date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}", ""]
    if args.what in ("ingest", "all"):
        lines += ingest_lines(run_ingest(events, args.partitions, args.start_fraction, args.keep_logs),
                              args.start_fraction)
        lines.append("")
    if args.what in ("year", "all"):
        lines += year_lines(run_year(sizes, n_dois, thresholds, args.year_runs, args.keep), n_dois, thresholds)
        lines.append("")
    lines.append(machine_line().replace("machine:", "machine at the end:", 1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
