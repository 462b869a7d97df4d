"""Shared by the benchmarks: one set of real services, product processes, events, the machine.

The benchmarks run the product exactly as it is deployed (``aggregator bridge`` and a Celery
worker as separate processes, talking to Tansu, Redis and PostgreSQL), so the services are
the same classes the tests and ``aggregator dev`` use (:mod:`tests.support.devstack.services`),
started once per benchmark run. Everything started here is stopped by
:meth:`Stack.close` / :meth:`Processes.close`, which the callers run in ``finally`` blocks,
so Ctrl-C or a failed assertion leaves no broker or worker behind.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import psycopg2

from tests.support.devstack.services import KafkaBroker, PostgresServer, RedisServer

AGGREGATOR: list[str] = [sys.executable, "-m", "worker.ops.cli"]
CELERY: list[str] = [sys.executable, "-m", "celery", "-A", "worker.app"]
TEMPLATE_DB = "bench_template"
MiB = 1024 * 1024

# Events are generated in chunks of this size, each from its own seed, so the first N events
# are the same whatever total was asked for: `--only ingest` and a full run store the same
# 200,000 events, and the 100,000-event backlog is the prefix of the 1,000,000 one.
CHUNK = 100_000
# A fixed "now" for the timestamps, so that a seed fully determines the events.
FIXED_NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)


class BenchError(RuntimeError):
    """A benchmark could not complete; the message points at the log to read."""


# --- machine -------------------------------------------------------------------------------
def machine_line() -> str:
    """``machine: 2 cores (AMD EPYC), 24 GiB, load 0.31`` — the context every figure needs.

    The load average is printed because other engineers run tests on this machine: a figure
    taken under load is not comparable with one taken on an idle machine.
    """
    model = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores ({model}), {ram_gib:.0f} GiB RAM, "
            f"Python {platform.python_version()}, load average {load}")


# --- events --------------------------------------------------------------------------------
def _chunk(index: int, size: int, dois: int, seed: int) -> list[bytes]:
    from worker.ops.demo import demo_events

    return list(demo_events(size, dois, seed=seed + index, now=FIXED_NOW))


def generate_events(n: int, dois: int = 5_000, seed: int = 7) -> list[bytes]:
    """``n`` realistic encoded events (``worker.ops.demo.demo_events``), deterministic for a seed.

    Generation runs ~20k events/s per core, so 1,000,000 events take the better part of a
    minute; chunks are generated on every core (spawned processes: nothing forks a process
    that may already hold librdkafka threads).
    """
    sizes = [min(CHUNK, n - start) for start in range(0, n, CHUNK)]
    if len(sizes) <= 1:
        return _chunk(0, n, dois, seed) if n else []
    workers = min(len(sizes), os.cpu_count() or 1)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        chunks = pool.map(_chunk, range(len(sizes)), sizes, [dois] * len(sizes), [seed] * len(sizes))
        return [event for chunk in chunks for event in chunk]


def produce_fast(bootstrap: str, topic: str, payloads: Sequence[bytes]) -> float:
    """Produce every payload and wait for all deliveries; return the seconds it took.

    Large linger and batches, ``acks=1``: loading the backlog is set-up, not the thing being
    measured, and should not take longer than needed.
    """
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bootstrap,
        "acks": 1,
        "linger.ms": 50,
        "batch.num.messages": 10_000,
        "batch.size": 4 * MiB,
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1024 * 1024,
    })
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    start = time.perf_counter()
    for i, payload in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.2)  # local queue full: let deliveries drain it
        if i % 20_000 == 0:
            producer.poll(0)
    left = producer.flush(120)
    if left or errors:
        raise BenchError(f"producing to {topic}: {left} undelivered, errors {errors[:3]}")
    return time.perf_counter() - start


# --- services ------------------------------------------------------------------------------
def _workdir(name: str) -> Path:
    # Not 0700: the `postgres` user (PostgreSQL refuses to run as root) must enter it.
    path = Path(tempfile.mkdtemp(prefix=f"agg-bench-{name}-"))
    path.chmod(0o755)
    return path


@dataclass
class Stack:
    """Tansu + Redis + PostgreSQL for one benchmark run, and what each run needs from them."""

    root: Path
    kafka: KafkaBroker
    redis: RedisServer
    pg: PostgresServer

    @classmethod
    def start(cls, *, durable: bool = True) -> Stack:
        """Start the three services (each waits for real readiness) and migrate a template.

        If one service fails to start, the ones already running are stopped before the
        error propagates. ``durable``: PostgreSQL with its default fsync and synchronous
        commit, as in production (``False`` gives the tests' throwaway settings).
        """
        root = _workdir("run")
        started: list[KafkaBroker | RedisServer | PostgresServer] = []
        try:
            kafka = KafkaBroker(root / "kafka").start()
            started.append(kafka)
            redis_server = RedisServer(root / "redis").start()
            started.append(redis_server)
            pg = PostgresServer(root / "pg", database=TEMPLATE_DB, durable=durable)
            started.append(pg)
            pg.start()
            from worker.db.migrate import migrate

            migrate(pg.dsn)
        except BaseException:
            for service in reversed(started):
                with contextlib.suppress(Exception):
                    service.stop()
            raise
        return cls(root, kafka, redis_server, pg)

    def close(self, *, keep_logs: bool = False) -> None:
        """Stop every service; remove the work directory unless its logs are wanted."""
        for service in (self.pg, self.redis, self.kafka):
            with contextlib.suppress(Exception):
                service.stop()
        if keep_logs:
            print(f"logs kept in {self.root}", file=sys.stderr)
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- per-run resources -------------------------------------------------------------------
    def fresh_database(self, prefix: str) -> str:
        """A new, migrated database (a clone of the template); its DSN."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        conn = psycopg2.connect(self.pg.admin_dsn)
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE_DB}"')
        finally:
            conn.close()
        return self.pg.dsn_for(name)

    def fresh_topic(self, prefix: str, partitions: int = 2) -> str:
        from worker.ingest.deadletter import ensure_topic

        topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
        ensure_topic(self.kafka.bootstrap, topic, partitions)
        return topic

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushall()

    def env(self, *, topic: str, dsn: str, **extra: str) -> dict[str, str]:
        """The environment of a product process (bridge or worker) in one benchmark run."""
        values = {
            "POSTGRES_DSN": dsn,
            "REDIS_URL": self.redis.url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap,
            "KAFKA_TOPIC": topic,
            "KAFKA_DLQ_TOPIC": f"{topic}.dlq",
            "KAFKA_GROUP_ID": f"bench-{topic}-{uuid.uuid4().hex[:6]}",  # a new group reads from the start
            "KAFKA_SESSION_TIMEOUT_MS": "6000",  # Tansu holds a new group's first join for half of it
            "EVENT_STORE": "postgres",
            "LOG_LEVEL": "INFO",
            "LOG_FORMAT": "kv",
        }
        values.update(extra)
        return values


class RowCounter:
    """Looks at ``discussion_event`` over one open connection, cheaply.

    The benchmark polls while the product runs on the same two cores, so polling must not
    steal the CPU it measures: one connection (no backend fork per look), no parallel
    workers for ``count(*)``, and :meth:`wait_for_rows` spaces its counts by the estimated
    time left (each ``count(*)`` scans the table).
    """

    def __init__(self, dsn: str) -> None:
        self._conn = psycopg2.connect(dsn, application_name="bench-counter")
        self._conn.autocommit = True
        self.query("SET max_parallel_workers_per_gather = 0")

    def __call__(self) -> int:
        return int(self.query("SELECT count(*) FROM discussion_event")[0])

    def any_rows(self) -> bool:
        return bool(self.query("SELECT EXISTS (SELECT 1 FROM discussion_event)")[0])

    def query(self, sql: str) -> tuple:
        with self._conn.cursor() as cur:
            cur.execute(sql)
            return tuple(cur.fetchone() or ()) if cur.description else ()

    def rows(self, sql: str) -> list[tuple]:
        with self._conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(row) for row in cur.fetchall()]

    def wait_for_rows(self, target: int, timeout: float, alive: Callable[[], None]) -> float:
        """Return the monotonic time ``count(*)`` was first seen >= ``target``.

        The pause before the next count is 40 % of the estimated time left, between 0.05 s
        and 1 s: many counts near the end (where precision matters), few before.
        """
        deadline = time.monotonic() + timeout
        first_at, first_n = time.monotonic(), self()
        while True:
            alive()
            now, n = time.monotonic(), self()
            if n >= target:
                return now
            if now >= deadline:
                raise BenchError(f"{n:,} of {target:,} events stored after {timeout:.0f} s")
            rate = (n - first_n) / (now - first_at) if now > first_at and n > first_n else 0.0
            left = (target - n) / rate if rate > 0 else 0.25
            time.sleep(min(1.0, max(0.05, 0.4 * left)))  # a state in other processes

    def close(self) -> None:
        self._conn.close()


def cpu_seconds(pid: int, *, children: bool = True, reaped: bool = False) -> float:
    """User + system CPU seconds of a process (and its live descendants); 0 if it is gone.

    ``reaped`` adds the time of the children each process has waited for (``cutime`` and
    ``cstime`` in ``/proc/<pid>/stat``), so a process that exited during a measurement (a
    PostgreSQL backend, a pool process) still counts.
    """
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)] if children else [root]
    except psutil.Error:
        return 0.0
    total = 0.0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
            if reaped:
                total += times.children_user + times.children_system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores) since boot.

    Other engineers run tests on this machine; the difference between this and the sum over
    the benchmark's own processes is CPU taken by others during the measurement.
    """
    import psutil

    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0)


def postmaster_pid(pg: PostgresServer) -> int:
    return int((pg.datadir / "postmaster.pid").read_text().split()[0])


# --- product processes ---------------------------------------------------------------------
@dataclass
class Processes:
    """Product subprocesses of one benchmark; ``close()`` stops each one and its children.

    Each runs in its own session, so a signal to its process group also reaches the Celery
    pool's children; nothing outside this list is ever signalled.
    """

    logdir: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)

    def spawn(self, argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        self.logdir.mkdir(parents=True, exist_ok=True)
        log_path = self.logdir / f"{name}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=Path(__file__).resolve().parents[1])
        self.procs.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def log_text(self, proc: subprocess.Popen) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def tail(self, proc: subprocess.Popen, chars: int = 3000) -> str:
        return self.log_text(proc)[-chars:]

    def check_alive(self, *procs: subprocess.Popen) -> None:
        for proc in procs:
            if proc.poll() is not None:
                raise BenchError(f"{proc.args[2:4]!r} exited with {proc.returncode}:\n{self.tail(proc)}")

    def terminate(self, proc: subprocess.Popen, timeout: float = 30.0) -> int:
        """SIGTERM the process group and wait (the bridge flushes on SIGTERM); SIGKILL after."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # The Celery pool's children may outlive their parent for a moment.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        return int(proc.returncode)

    def close(self) -> None:
        for proc in reversed(self.procs):
            self.terminate(proc, timeout=10.0)
        self.procs.clear()


def wait_for(check: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.1,
             alive: Callable[[], None] | None = None) -> float:
    """Await a state another process produces; return the monotonic time it was seen.

    ``alive`` is called on every round so a crashed bridge or worker fails the benchmark at
    once, with its log, instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None:
            alive()
        if check():
            return time.monotonic()
        if time.monotonic() >= deadline:
            raise BenchError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)  # a state in another process: nothing to await but the next look


def log_fields(line: str) -> dict[str, str]:
    """The key=value pairs of one product log line (``worker.config.logs.KeyValueFormatter``)."""
    out: dict[str, str] = {}
    for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line):
        value = match.group(2)
        out[match.group(1)] = value[1:-1] if value.startswith('"') else value
    return out


def find_log_line(text: str, msg: str) -> dict[str, str] | None:
    """The last line whose ``msg`` is ``msg``, as fields; None when there is none."""
    found = None
    for line in text.splitlines():
        if f"msg={msg}" in line or f'msg="{msg}"' in line:
            found = log_fields(line)
    return found


def fmt_int(n: float) -> str:
    return f"{n:,.0f}"
