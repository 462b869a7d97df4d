"""Ingest throughput: the product (bridge + one Celery worker) against the source's approach.

Product: the events wait in a fresh topic (produced first, not timed); the clock starts
when ``aggregator bridge`` and one ingest worker (``-c 2``) are started, and stops when
``discussion_event`` holds every event. The bridge's log says when its consumer group join
was done (partitions assigned), and the CPU each component used is measured (bridge, worker
main process, pool, PostgreSQL, Redis, Tansu, and other users of the machine), which says
where time goes.

Baseline, in the same run, on the same events: what the source did — a plain
confluent-kafka consumer that decodes each event with the stdlib ``json`` and writes it
with one ``INSERT`` and one ``COMMIT``, into a fresh ``discussion_event`` table of a second
database. Its cost per event does not depend on how many events there are, so it runs on
a prefix and is extrapolated (the report says so).

Both are timed the same two ways:

* **throughput**: from the moment the consumer may read (group join done) to the last
  event stored — the rate each approach sustains;
* **wall from start**: the same plus the start-up. Both pay the broker's group join (Tansu
  holds a new group's first join for half the session timeout; Kafka's
  ``group.initial.rebalance.delay.ms`` is 3 s by default); the product also pays its two
  processes' start-up and imports, which the in-process baseline does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from bench.common import (
    AGGREGATOR,
    CELERY,
    FIXED_NOW,
    BenchError,
    Processes,
    RowCounter,
    Stack,
    cpu_seconds,
    find_log_line,
    machine_busy_seconds,
    postmaster_pid,
    produce_fast,
    wait_for,
)
from worker.core.partitions import EVENTS
from worker.db import partition_admin

# How the product is configured for this benchmark (printed with the results).
# - INGEST_RATE_LIMIT far above the task rate (a few batches per second), so the shared write
#   limit (a token bucket in Redis) is not what is measured.
# - ceiling = smoothed rate x BRIDGE_TARGET_INTERVAL_S: at 4,000-20,000 events/s this gives
#   batches of 1,000-5,000 (capped by BRIDGE_MAX_BATCH). The estimate starts from zero,
#   so the first batches are small whatever the rate; a half-life of 1 s (default 60 s)
#   makes that ramp-up last ~80 batches instead of hundreds (measured: half-life 2 s
#   gave ~140 batches for 100,000 events and a ~12 % lower steady rate).
# - BRIDGE_MAX_BATCH_AGE_S = 2 x the interval, the same ratio as the production defaults
#   (5 s / 10 s); with the default 10 s the last partial batch would wait 10 s.
PRODUCT_SETTINGS: dict[str, str] = {
    "INGEST_RATE_LIMIT": "1000/s",
    "BRIDGE_TARGET_INTERVAL_S": "0.25",
    "BRIDGE_RATE_HALF_LIFE_S": "1",
    "BRIDGE_MAX_BATCH": "5000",
    "BRIDGE_MAX_BATCH_AGE_S": "0.5",
}
WORKER_CONCURRENCY = 2

_BASELINE_INSERT = """
INSERT INTO discussion_event (event_id, doi, time, score, sentiment_raw, followers, length,
    questions, exclamations, bot_rating, contains_abstract_raw, time_score, type_factor,
    user_score, content_score)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


@dataclass
class CpuUse:
    """CPU seconds per component over a timed run: where the two cores went."""

    wall: float
    parts: dict[str, float]
    machine: float  # the whole machine's busy CPU seconds over the same time

    def line(self, events: int) -> str:
        cores = os.cpu_count() or 1
        total = sum(self.parts.values())
        shares = ", ".join(f"{name} {sec:.1f} s ({sec / events * 1e6:.0f} µs/ev)" for name, sec in self.parts.items())
        return (f"CPU over {self.wall:.1f} s wall ({cores} cores = {cores * self.wall:.1f} core-s): {shares}; "
                f"total {total:.1f} core-s = {total / self.wall:.2f} cores busy; whole machine "
                f"{self.machine / self.wall:.2f} cores busy (others: {max(0.0, self.machine - total) / self.wall:.2f})")


@dataclass
class ProductRun:
    events: int
    seconds: float  # process start -> last row visible
    first_row_s: float  # process start -> first row visible
    assigned_s: float | None  # process start -> the bridge's partitions assigned (group join done)
    batch_sizes: list[int]
    bridge_stats: dict[str, str]
    cpu: CpuUse
    profiles: dict[str, Path] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def steady_rate(self) -> float:
        """Events/s from the first row to the last: the pipeline once it is running."""
        return self.events / (self.seconds - self.first_row_s)

    @property
    def consuming_seconds(self) -> float:
        """From the group join (partitions assigned) to the last event stored."""
        if self.assigned_s is None:
            raise BenchError("the bridge never logged `partitions assigned`")
        return self.seconds - self.assigned_s

    @property
    def throughput(self) -> float:
        return self.events / self.consuming_seconds


@dataclass
class BaselineRun:
    events: int
    seconds: float  # first message -> last commit
    join_seconds: float  # subscribe -> first message (the group join)
    cpu: CpuUse

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def wall_seconds(self, events: int) -> float:
        """Subscribe to the last of ``events`` stored, extrapolated at the measured rate."""
        return self.join_seconds + events / self.rate


@dataclass
class IngestResult:
    product: ProductRun
    baseline: BaselineRun
    produce_seconds: float

    @property
    def ratio(self) -> float:
        """Throughput ratio: both timed from the group join to the last event stored."""
        return self.product.throughput / self.baseline.rate

    @property
    def wall_ratio(self) -> float:
        """Wall ratio for the product's event count, start-up included on both sides."""
        return self.baseline.wall_seconds(self.product.events) / self.product.seconds


# --- the product -----------------------------------------------------------------------------
def _start_profiler(pid: int, out: Path, *, subprocesses: bool) -> subprocess.Popen:
    """py-spy sampling ``pid`` into collapsed stacks (summarised by :func:`top_frames`)."""
    argv = ["py-spy", "record", "--pid", str(pid), "--format", "raw", "--rate", "100",
            "--output", str(out), "--nonblocking"]
    if subprocesses:
        argv.append("--subprocesses")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _stop_profiler(proc: subprocess.Popen) -> None:
    """SIGINT makes py-spy write its output; it is killed if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _service_cpu(stack: Stack) -> dict[str, float]:
    assert stack.kafka.proc is not None and stack.redis.proc is not None
    return {
        "PostgreSQL": cpu_seconds(postmaster_pid(stack.pg)),
        "Redis": cpu_seconds(stack.redis.proc.pid),
        "Tansu": cpu_seconds(stack.kafka.proc.pid),
        "bench poller": cpu_seconds(os.getpid(), children=False),
    }


def _assigned_at(text: str, started_wall: float) -> float | None:
    """Seconds from process start to the bridge's ``partitions assigned`` log line."""
    fields = find_log_line(text, "partitions assigned")
    if fields is None or "ts" not in fields:
        return None
    stamp = datetime.strptime(fields["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return stamp.timestamp() - started_wall


def run_product(stack: Stack, procs: Processes, topic: str, events: int, *,
                profile_dir: Path | None = None) -> ProductRun:
    """Start bridge + worker against the filled topic; time until every event is stored."""
    dsn = stack.fresh_database("product")
    stack.flush_redis()
    env = stack.env(topic=topic, dsn=dsn, **PRODUCT_SETTINGS)
    counter = RowCounter(dsn)
    profilers: dict[str, subprocess.Popen] = {}
    profiles: dict[str, Path] = {}
    bridge = worker = None
    try:
        before = _service_cpu(stack)
        machine_before = machine_busy_seconds()
        started_wall = time.time()
        start = time.monotonic()
        bridge = procs.spawn([*AGGREGATOR, "bridge"], env, "ingest-bridge")
        worker = procs.spawn([*CELERY, "worker", "-Q", "ingest", "-c", str(WORKER_CONCURRENCY),
                              "-n", f"bench-ingest-{uuid.uuid4().hex[:6]}@localhost",
                              "--without-mingle", "--without-gossip", "-l", "warning"], env, "ingest-worker")
        if profile_dir is not None:
            profile_dir.mkdir(parents=True, exist_ok=True)
            for name, proc, children in (("bridge", bridge, False), ("worker", worker, True)):
                profiles[name] = profile_dir / f"ingest-{name}.txt"
                profilers[name] = _start_profiler(proc.pid, profiles[name], subprocesses=children)

        def alive() -> None:
            procs.check_alive(bridge, worker)

        timeout = 120 + events / 500  # generous: a stuck pipeline fails, a slow one finishes
        first_row = wait_for(counter.any_rows, timeout, "first stored event", interval=0.05, alive=alive)
        done = counter.wait_for_rows(events, timeout, alive)
        seconds = done - start
        after = _service_cpu(stack)
        machine = machine_busy_seconds() - machine_before
        parts = {"bridge": cpu_seconds(bridge.pid)}
        worker_main = cpu_seconds(worker.pid, children=False)
        parts["worker main"] = worker_main
        parts[f"worker pool (-c {WORKER_CONCURRENCY})"] = cpu_seconds(worker.pid) - worker_main
        parts.update({name: after[name] - before[name] for name in before})
        for proc in profilers.values():
            _stop_profiler(proc)

        stored = counter()
        if stored != events:
            raise BenchError(f"product stored {stored} events, expected {events}")
        # ingested_at is now() of the writing transaction: one value per batch.
        sizes = [int(n) for (n,) in counter.rows("SELECT count(*) FROM discussion_event GROUP BY ingested_at")]
        procs.terminate(bridge)  # SIGTERM: the bridge flushes, commits and logs its totals
        procs.terminate(worker)
        text = procs.log_text(bridge)
        stats = find_log_line(text, "bridge stopped") or {}
        return ProductRun(events, seconds, first_row - start, _assigned_at(text, started_wall),
                          sizes, stats, CpuUse(seconds, parts, machine), profiles)
    finally:
        for proc in profilers.values():
            _stop_profiler(proc)
        for child in (bridge, worker):
            if child is not None:
                procs.terminate(child, timeout=10)
        counter.close()


# --- the baseline ------------------------------------------------------------------------------
def run_baseline(stack: Stack, topic: str, events: int) -> BaselineRun:
    """The source's loop: poll one message, ``json.loads``, one INSERT, one COMMIT."""
    from confluent_kafka import Consumer

    dsn = stack.fresh_database("baseline")
    consumer = Consumer({
        "bootstrap.servers": stack.kafka.bootstrap,
        "group.id": f"baseline-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": True,
        # Not timed, but Tansu holds a new group's first join for half the session timeout
        # (22 s with the default 45 s): the smallest allowed timeout keeps the run short.
        "session.timeout.ms": 6000,
    })
    conn = psycopg2.connect(dsn, application_name="bench-baseline")
    # Not timed: the month partitions the events fall in (the product's writers create them
    # as they go; the baseline's plain INSERT would find none). The events lie within a day
    # or so before FIXED_NOW.
    partition_admin.ensure(conn, EVENTS, EVENTS.ranges(FIXED_NOW - timedelta(days=40),
                                                       FIXED_NOW + timedelta(days=1)))
    try:
        subscribed = time.perf_counter()
        consumer.subscribe([topic])
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        backend = int(cur.fetchone()[0])
        conn.commit()
        done = 0
        start: float | None = None
        cpu_before = (0.0, 0.0, 0.0)
        deadline = time.monotonic() + 60 + events / 200
        while done < events:
            if time.monotonic() > deadline:
                raise BenchError(f"baseline: only {done} of {events} events within the deadline")
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            if start is None:
                start = time.perf_counter()
                cpu_before = (cpu_seconds(os.getpid(), children=False), cpu_seconds(backend),
                              machine_busy_seconds())
            event = json.loads(message.value() or b"")
            processed = event["subj"]["processed"]
            cur.execute(_BASELINE_INSERT, (
                event.get("id"), event["obj"]["data"]["doi"], event["timestamp"],
                processed["score"], processed["sentiment_raw"], processed["followers"], processed["length"],
                processed["question_mark_count"], processed["exclamation_mark_count"], processed["bot_rating"],
                processed.get("contains_abstract_raw", 0.0), processed.get("time_score", 0.0),
                processed.get("type_factor", 0.0), processed.get("user_score", 0.0),
                processed.get("content_score", 0.0),
            ))
            conn.commit()
            done += 1
        assert start is not None
        seconds = time.perf_counter() - start
        cpu = CpuUse(seconds, {"consumer (python + librdkafka)": cpu_seconds(os.getpid(), children=False)
                               - cpu_before[0], "PostgreSQL backend": cpu_seconds(backend) - cpu_before[1]},
                     machine_busy_seconds() - cpu_before[2])
    finally:
        with contextlib.suppress(Exception):
            consumer.close()
        conn.close()
    with contextlib.closing(psycopg2.connect(dsn)) as check, check.cursor() as cur:
        cur.execute("SELECT count(*) FROM discussion_event")
        stored = cur.fetchone()[0]
    if stored != events:
        raise BenchError(f"baseline stored {stored} events, expected {events}")
    return BaselineRun(events, seconds, start - subscribed, cpu)


def run(stack: Stack, payloads: list[bytes], *, baseline_events: int,
        profile_dir: Path | None = None) -> IngestResult:
    """Both measurements on the same events: fill one topic, run the baseline, the product."""
    topic = stack.fresh_topic("ingest", partitions=2)
    produce_seconds = produce_fast(stack.kafka.bootstrap, topic, payloads)
    # Baseline first: the product's database then gets no autovacuum work from it.
    baseline = run_baseline(stack, topic, min(baseline_events, len(payloads)))
    procs = Processes(stack.root / "logs" / f"ingest-{os.getpid()}")
    try:
        product = run_product(stack, procs, topic, len(payloads), profile_dir=profile_dir)
    finally:
        procs.close()
    return IngestResult(product, baseline, produce_seconds)


# --- reporting -----------------------------------------------------------------------------------
def batch_summary(sizes: list[int]) -> str:
    """Batch sizes as stored: ``ingested_at`` is ``now()`` of the writing transaction, so
    rows sharing it were one batch (two batches starting in the same microsecond would
    count as one)."""
    if not sizes:
        return "batch sizes unknown"
    ordered = sorted(sizes)
    big = [s for s in sizes if s >= 1000]
    return (f"batch sizes (by ingested_at): median {ordered[len(ordered) // 2]:,}, max {ordered[-1]:,}; "
            f"{len(big)} of {len(sizes)} batches have >= 1,000 events and hold {sum(big) / sum(sizes):.0%} "
            f"of the events")


def top_frames(collapsed: Path, top: int = 12) -> list[tuple[float, float, str]]:
    """(self share, inclusive share, frame) from py-spy's collapsed stacks, by self time."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_time[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return []
    return [(n / total, inclusive[frame] / total, frame) for frame, n in self_time.most_common(top)]
