"""PostgreSQL frozen (SIGSTOP of the postmaster and every backend) for 90 s in the middle of a
trend run, then SIGCONT.

A chunk waits inside a query (the staging table is held by another session) when the server
stops answering. libpq would wait for ever; the chunk ends at its soft time limit
(worker/celeryapp/stalls.py), its errback releases the run's lease in Redis at once, and the
mark `failed`, which the frozen server cannot take, is written by a retrying task as soon as
it answers. The worker is never restarted, and the next run of the duration finalizes.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.support.devstack.services import PostgresServer
from tests.support.fault_harness import Stage, wait
from tests.support.helpers import q, send_until_started
from tests.support.trend_seed import seed_events, seed_plain_publications
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.faults

FREEZE_S = 90.0
CHUNK_LIMIT_S = 40  # soft limit 32 s: the bound on a chunk that waits on a frozen server
CHUNK_WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND query ILIKE '%publication_doi = ANY%'")


def postgres_processes(server: PostgresServer) -> list[int]:
    """The postmaster, then its children (each backend calls setsid(): no one group to signal)."""
    postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
    return [postmaster, *map(int, Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split())]


@pytest.fixture
def stage(env: dict[str, str], own_pg: PostgresServer, tmp_path: Path) -> Iterator[Stage]:
    stage = Stage({**env, "POSTGRES_DSN": own_pg.dsn}, tmp_path, TREND_CHUNK_SIZE="100",
                  TASK_TIME_LIMIT_CHUNK_S=str(CHUNK_LIMIT_S))
    yield stage
    stage.close()


def test_postgres_frozen_during_a_run(stage: Stage, own_pg: PostgresServer) -> None:
    from worker.app import app
    from worker.celeryapp.resources import for_process

    lease = for_process().leases.of("currently")
    now = datetime.now(UTC).replace(microsecond=0)
    dois = [f"10.1101/f{i:04d}" for i in range(300)]  # 3 chunks of 100
    seed_events(stage.dsn, datetime_to_ns(now), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(stage.dsn, dois)
    worker = stage.supervisor.children[stage.start_worker("trends", concurrency=1)]

    locker = psycopg2.connect(stage.dsn)
    with locker.cursor() as cur:  # the first chunk's staging write waits: the run is inside a query
        cur.execute("LOCK TABLE trending_staging IN SHARE ROW EXCLUSIVE MODE")
    app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
    wait(lambda: q(stage.dsn, CHUNK_WAITING) != [(0,)], 60, "a chunk inside a query")
    (run_id,), = q(stage.dsn, "SELECT run_id FROM trend_run WHERE status = 'running'")
    frozen = postgres_processes(own_pg)
    for pid in frozen:  # the postmaster first: it forks nothing meanwhile
        os.kill(pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        lease_free = wait(lambda: lease.holder() is None, FREEZE_S - 5, "the run's lease released while frozen")
    finally:
        time.sleep(max(0.0, FREEZE_S - (time.monotonic() - frozen_at)))  # the fault: 90 s without an answer
        for pid in reversed(frozen):
            os.kill(pid, signal.SIGCONT)
    thawed = time.monotonic()
    locker.rollback()
    locker.close()

    def run_status() -> str:
        return str(q(stage.dsn, "SELECT status FROM trend_run WHERE run_id = %s", (run_id,))[0][0])

    recorded = wait(lambda: run_status() == "failed", 30, "the failure written once PostgreSQL answers")
    (error,), = q(stage.dsn, "SELECT error FROM trend_run WHERE run_id = %s", (run_id,))
    # The soft limit, or the connection it shut ("no connection to the server"), is the reason.
    assert str(error).startswith(("SoftTimeLimitExceeded", "OperationalError")), error
    started = send_until_started(app, "currently", (now + timedelta(minutes=3)).isoformat(), 60, wait)
    wait(lambda: q(stage.dsn, "SELECT status FROM trend_run WHERE run_id = %s", (started["run_id"],))
         == [("finalized",)], 60, "the next run finalized")
    settled = time.monotonic() - thawed
    assert worker.alive and worker.restarts == 0 and not worker.exits, stage.log("worker-trends")[-3000:]
    print(f"FAULT postgres frozen (SIGSTOP) {FREEZE_S:.0f} s during a trend run: lease released "
          f"{lease_free:.1f} s into the freeze (chunk soft limit {CHUNK_LIMIT_S * 0.8:.0f} s), run marked failed "
          f"{recorded:.1f} s after SIGCONT, next run finalized {settled:.1f} s after SIGCONT")
    assert lease_free <= CHUNK_LIMIT_S * 0.8 + 10
