"""A full trend run end to end: `currently` over 1,000,000 events on 10,000 DOIs.

PostgreSQL event store, a real `celery worker -Q trends -c 1`, the run enqueued the way beat
does it; wall time per phase read from `trend_run` (select, chunks, finalize, view refresh).
The events are written with the product's COPY path before the clock starts.

    python -m bench.full_run [--events 1000000] [--dois 10000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import numpy as np
import psycopg2

S = 1_000_000_000


def _workdir(name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    path.chmod(0o755)
    return path


def seed(dsn: str, n_events: int, n_dois: int, now_ns: int, span_s: int) -> None:
    from worker.core.events import Point
    from worker.store.postgres.store import PostgresStore

    rng = np.random.default_rng(42)
    # Popularity skew like real altmetrics, but every DOI well above min_events on average.
    weights = 1.0 / (np.arange(n_dois) + 10.0) ** 0.5
    doi_of = rng.choice(n_dois, size=n_events, p=weights / weights.sum())
    ages = rng.uniform(0, span_s, size=n_events)
    scores = rng.uniform(1, 80, size=n_events)
    store = PostgresStore(dsn)
    batch = 100_000
    for start in range(0, n_events, batch):
        stop = min(start + batch, n_events)
        store.write([
            Point(f"e{i}", f"10.1101/bench.{doi_of[i]:06d}", now_ns - int(ages[i] * S) // 1000 * 1000,
                  float(scores[i]), 0.1, 100, 120, 0, 1, 2.0, 0.3, 1.0, 1.0, 2.0, 3.0)
            for i in range(start, stop)
        ])
    store.close()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        # Every DOI has its publication, as in amba: the finalize matches rows to them.
        cur.execute("INSERT INTO publication (doi, title) SELECT format('10.1101/bench.%%s', lpad(i::text, 6, '0')), "
                    "'Bench paper ' || i FROM generate_series(0, %s - 1) AS i", (n_dois,))
        cur.execute("ANALYZE discussion_event")
        cur.execute("ANALYZE publication")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--dois", type=int, default=10_000)
    args = parser.parse_args(argv)

    from tests.support.devstack.services import PostgresServer, RedisServer, wait_until

    pg = PostgresServer(_workdir("pg"), durable=True).start()  # production durability
    redis_server = RedisServer(_workdir("redis")).start()
    worker: subprocess.Popen | None = None
    worker_log: BinaryIO | None = None
    try:
        env = {**os.environ, "POSTGRES_DSN": pg.dsn, "REDIS_URL": redis_server.url, "EVENT_STORE": "postgres",
               "LOG_LEVEL": "WARNING"}
        os.environ.update({k: env[k] for k in ("POSTGRES_DSN", "REDIS_URL", "EVENT_STORE")})
        from worker.db.migrate import migrate
        from worker.trends.planning import datetime_to_ns

        migrate(pg.dsn)
        now = datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        seed(pg.dsn, args.events, args.dois, datetime_to_ns(now), 6 * 3600)
        print(f"seeded {args.events:,} events on {args.dois:,} DOIs in {time.perf_counter() - t0:.1f}s "
              "(COPY path, not part of the run)", flush=True)

        from worker.app import app

        # The worker's banner and log go to a file, so stdout holds only the results.
        worker_log = (redis_server.workdir / "trends-worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-Q", "trends", "-c", "1",
             "-n", "bench-trends@localhost", "--without-mingle", "--without-gossip", "-l", "warning"],
            env=env, start_new_session=True, stdout=worker_log, stderr=subprocess.STDOUT)
        wait_until(lambda: bool(app.control.ping(destination=["bench-trends@localhost"], timeout=0.5)), 60,
                   "trends worker")
        started = time.perf_counter()
        app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")

        def done() -> bool:
            with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
                cur.execute("SELECT status, refreshed_at FROM trend_run")
                row = cur.fetchone()
                if row and row[0] == "failed":
                    raise SystemExit("the trend run failed")
                return bool(row and row[1] is not None)

        wait_until(done, 1800, "trend run")
        wall = time.perf_counter() - started
        with psycopg2.connect(pg.dsn) as conn, conn.cursor() as cur:
            cur.execute("""SELECT dois, chunks, rows_written,
                                  extract(epoch FROM planned_at - started_at),
                                  extract(epoch FROM finalize_at - planned_at),
                                  extract(epoch FROM finished_at - finalize_at),
                                  extract(epoch FROM refreshed_at - finished_at),
                                  extract(epoch FROM refreshed_at - started_at)
                           FROM trend_run""")
            dois, chunks, rows, select_s, chunks_s, finalize_s, view_s, total_s = cur.fetchone() or (None,) * 8
        print(f"\nfull run `currently`: {args.events:,} events, {dois:,} qualifying DOIs, {chunks} chunks, "
              f"{rows:,} rows, worker -Q trends -c 1")
        print(f"  {'phase':<14}{'wall s':>9}")
        for name, value in (("select", select_s), ("chunks", chunks_s), ("finalize", finalize_s),
                            ("view refresh", view_s), ("run total", total_s)):
            print(f"  {name:<14}{float(value):>9.2f}")
        print(f"  {'enqueue->done':<14}{wall:>9.2f}  (includes the beat-style enqueue and result polling)")
        return 0
    except BaseException:
        log_file = redis_server.workdir / "trends-worker.log"
        if log_file.exists():
            print("trends worker log (tail):\n" + log_file.read_text(errors="replace")[-4000:], file=sys.stderr)
        raise
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
        if worker_log is not None:
            worker_log.close()
        redis_server.stop()
        pg.stop()
        shutil.rmtree(pg.workdir, ignore_errors=True)
        shutil.rmtree(redis_server.workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
