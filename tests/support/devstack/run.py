"""`aggregator dev`: the whole product on this machine, on real services, in one command.

Starts Kafka (Tansu), Redis and PostgreSQL from the machine's binaries, runs setup, then
the bridge, an ingest worker, a trends worker (-c 1), a default worker (morning post) and
beat as supervised child processes (restarted when they exit, as compose does) with the
same environment a container would get, produces demo
events and prints what was ingested and trended. Ctrl-C (or the end of the demo without
--keep) stops everything it started, in reverse order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg2

from tests.support.devstack.publications import create_publications
from tests.support.devstack.services import KafkaBroker, PostgresServer, RedisServer, ServiceError
from tests.support.devstack.supervisor import Supervisor
from worker.core import names
from worker.core.failures import OperatorError, ServiceUnavailable
from worker.ingest.deadletter import ensure_topic

CELERY = [sys.executable, "-m", "celery", "-A", "worker.app"]
AGGREGATOR = [sys.executable, "-m", "worker.ops.cli"]


def _count(dsn: str, sql: str) -> int:
    try:
        with psycopg2.connect(dsn, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute(sql)
            row = cur.fetchone()
            return int(row[0]) if row else -1
    except psycopg2.Error:
        return -1


def _print_top(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, dois, chunks, rows_written, finished_at - started_at FROM trend_run "
                    "ORDER BY started_at DESC LIMIT 1")
        print("last trend run: status={} dois={} chunks={} rows={} took={}".format(*(cur.fetchone() or ())))
        cur.execute("SELECT publication_doi, count, round(score::numeric, 2), round(trending::numeric, 3), mk_trend "
                    "FROM trending WHERE duration = 'currently' ORDER BY score DESC LIMIT 5")
        print("top 5 trending (currently): doi, events, score, Theil-Sen slope, Mann-Kendall")
        for row in cur.fetchall():
            print("   ", *row)


def run_dev(*, events: int, dois: int, workdir: str, keep: bool) -> int:
    root = Path(workdir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    services: list[object] = []
    supervisor = Supervisor()
    try:
        print(f"starting services in {root} ...", flush=True)
        kafka = KafkaBroker(root / "kafka").start()
        services.append(kafka)
        redis_server = RedisServer(root / "redis").start()
        services.append(redis_server)
        pg = PostgresServer(root / "postgres").start()
        services.append(pg)
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
            "REDIS_URL": redis_server.url,
            "POSTGRES_DSN": pg.dsn,
            "EVENT_STORE": "postgres",
            "INGEST_RATE_LIMIT": os.environ.get("INGEST_RATE_LIMIT", "50/s"),
            "PYTHONUNBUFFERED": "1",
        }
        print(f"  kafka {kafka.bootstrap}  redis {redis_server.url}  postgres {pg.dsn}", flush=True)
        subprocess.run([*AGGREGATOR, "setup"], env=env, check=True)
        create_publications(pg.dsn, dois)  # upstream's job in production (amba's pipeline)
        ensure_topic(kafka.bootstrap, env.get("KAFKA_TOPIC", "events_processed-discusses"), 2)
        logs = root / "logs"
        logs.mkdir(exist_ok=True)

        def start(name: str, argv: list[str]) -> None:
            supervisor.start(name, argv, env, logs / f"{name}.log")

        start("worker-ingest", [*CELERY, "worker", "-Q", "ingest", "-c", "1", "-n", "ingest@%h", "-l", "info"])
        start("worker-trends", [*CELERY, "worker", "-Q", "trends", "-c", "1", "-n", "trends@%h", "-l", "info"])
        start("worker-default", [*CELERY, "worker", "-Q", f"{names.DEFAULT_QUEUE},{names.MAINTENANCE_QUEUE}", "-c", "1",
                                "-n", "default@%h", "-l", "info"])
        start("beat", [*CELERY, "beat", "-l", "info"])  # its schedule and lock live in Redis
        start("bridge", [*AGGREGATOR, "bridge"])
        print(f"processes started (restarted when they exit, like compose's restart policy); logs in {logs}",
              flush=True)
        subprocess.run([*AGGREGATOR, "produce-demo", "--events", str(events), "--dois", str(dois)],
                       env=env, check=True)
        started = time.monotonic()
        trending_seen = triggered = False
        while not stop.is_set():
            stored = _count(pg.dsn, "SELECT count(*) FROM discussion_event")
            trending = _count(pg.dsn, "SELECT count(*) FROM trending")
            print(f"[{time.monotonic() - started:6.1f}s] events stored: {stored}/{events}   "
                  f"trending rows: {max(trending, 0)}", flush=True)
            for name in supervisor.poll():
                child = supervisor.children[name]
                print(f"{name} exited with {child.exits[-1]} and was restarted ({child.restarts}x); "
                      f"see {child.log_path}", flush=True)
            if stored >= events and not triggered:
                # Do not wait for beat's next tick: enqueue a run the way beat does.
                print(f"all {events} events ingested in {time.monotonic() - started:.1f}s; "
                      "enqueueing a `currently` trend run on the trends queue", flush=True)
                subprocess.run([*CELERY, "call", names.RUN_TREND, "--args", '["currently"]',
                                "--queue", "trends"], env=env, check=True, capture_output=True)
                triggered = True
            if trending > 0 and not trending_seen:
                trending_seen = True
                _print_top(pg.dsn)
                if not keep:
                    break
            stop.wait(2.0)
        return 0
    except ServiceError as error:
        raise ServiceUnavailable("the dev stack", str(root), str(error),
                                 "Install what it names (README: the two commands), then run again.") from None
    except subprocess.CalledProcessError as error:
        raise OperatorError(f"the dev stack failed: {' '.join(map(str, error.cmd[-2:]))} exited with "
                            f"{error.returncode}", "Its output is above.") from None
    finally:
        supervisor.stop_all(timeout_s=20)
        for service in reversed(services):
            service.stop()  # type: ignore[attr-defined]
        print("stopped everything", flush=True)
