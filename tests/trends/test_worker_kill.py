"""The trends worker killed in the middle of a chord: the run's lease expires, the next run
of the duration takes over on schedule, gives the dead run up and publishes.

Before, the dead run stayed `running`, its lock lived for its hour-long TTL and the chunk
came back only after the 2-hour visibility timeout: the duration froze. Now the lease
(TREND_LOCK_TTL_S, 20 s here) is renewed by every chunk; the worker is killed while a chunk
waits on a lock (so the kill is inside the chord); the supervisor restarts it; a "beat"
sends the duration's run every few seconds and the first that finds the lease free wins.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from tests.support.fault_harness import Stage, wait
from tests.support.helpers import q, send_until_started
from tests.support.trend_seed import seed_events, seed_plain_publications
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.faults

LEASE_S = 20
#: A chunk's staging write waiting for the locked table (not a run's clean-up of old rows).
CHUNK_WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND query ILIKE '%publication_doi = ANY%'")



@pytest.fixture
def stage(env: dict[str, str], tmp_path: Path) -> Iterator[Stage]:
    # The time limits stay below the lease, as the settings require.
    stage = Stage(env, tmp_path, TREND_LOCK_TTL_S=str(LEASE_S), TREND_CHUNK_SIZE="50",
                  TASK_TIME_LIMIT_CHUNK_S=str(LEASE_S - 5), TASK_TIME_LIMIT_FINALIZE_S=str(LEASE_S - 5))
    yield stage
    stage.close()


def test_trends_worker_killed_mid_chord_then_the_next_run_on_time(stage: Stage) -> None:
    from worker.app import app
    from worker.celeryapp.resources import for_process

    now = datetime.now(UTC).replace(microsecond=0)
    dois = [f"10.1101/k{i:04d}" for i in range(500)]  # 10 chunks of 50
    seed_events(stage.dsn, datetime_to_ns(now), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(stage.dsn, dois)
    worker = stage.supervisor.children[stage.start_worker("trends", concurrency=1)]

    locker = psycopg2.connect(stage.dsn)
    try:
        with locker.cursor() as cur:  # the first chunk's staging write waits: the chord is under way
            cur.execute("LOCK TABLE trending_staging IN SHARE ROW EXCLUSIVE MODE")
        app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
        wait(lambda: q(stage.dsn, CHUNK_WAITING) != [(0,)], 60, "a chunk inside the chord")
        (dead_run,) = q(stage.dsn, "SELECT run_id FROM trend_run WHERE status = 'running'")[0]
        # Killed for good (not restarted under its node name, which would give its lease up at
        # once: the test below); another trends worker, on another node, takes over.
        worker.stopped = True
        stage.supervisor.signal("worker-trends", signal.SIGKILL)
        killed_at = time.monotonic()
        other = stage.supervisor.children[stage.start_worker("trends", concurrency=1, name="worker-trends-b")]
        wait(lambda: other.alive and not worker.alive, 30, "the other trends worker started")
    finally:
        locker.rollback()
        locker.close()

    # Beat, faster: the next `currently` run is sent until one starts (the expired lease).
    later = now + timedelta(minutes=3)
    started = send_until_started(app, "currently", later.isoformat(), LEASE_S + 60, wait)
    run_id = str(started["run_id"])
    # The chunk the dead worker held is handed to the other worker (worker/celeryapp/liveness.py),
    # so the dead run may finish there before the lease would give it up.
    assert started["abandoned"] in ([dead_run], [])
    wait(lambda: q(stage.dsn, "SELECT status FROM trend_run WHERE run_id = %s", (run_id,)) == [("finalized",)], 60,
         "the next run finalized")
    took = time.monotonic() - killed_at
    (status, error), = q(stage.dsn, "SELECT status, error FROM trend_run WHERE run_id = %s", (dead_run,))
    if started["abandoned"]:
        assert status == "failed" and "abandoned" in str(error)
    else:
        assert status in ("finalized", "failed"), status
    (written,), = q(stage.dsn, "SELECT rows_written FROM trend_run WHERE run_id = %s", (run_id,))
    assert q(stage.dsn, "SELECT count(*), min(run_id), max(run_id) FROM trending WHERE duration = 'currently'") \
        == [(written, run_id, run_id)]
    assert isinstance(written, int) and written > 450  # a few DOIs drop below min_events 3 minutes later
    assert q(stage.dsn, "SELECT count(*) FROM trending_staging") == [(0,)]
    assert for_process().leases.of("currently").holder() is None
    print(f"FAULT trends worker SIGKILL mid-chord: next run finalized {took:.1f} s after the kill "
          f"(lease {LEASE_S} s)")
    assert took <= LEASE_S + 60


@pytest.mark.parametrize(("duration", "events"), [("currently", 12), ("year", 31)])
def test_a_trends_worker_restarted_after_a_kill_runs_the_duration_again_within_a_minute(
        env: dict[str, str], tmp_path: Path, duration: str, events: int) -> None:
    """The default settings (a 150 s lease, `year` scheduled once a day): the worker that
    comes back under the same node name gives up its dead incarnation's lease and runs the
    duration again at once; nobody sends a run by hand."""
    from worker.app import app
    from worker.celeryapp.resources import for_process

    stage = Stage(env, tmp_path, TREND_CHUNK_SIZE="50")
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        dois = [f"10.1101/r{i:04d}" for i in range(500)]  # 10 chunks of 50
        seed_events(stage.dsn, datetime_to_ns(now), dict.fromkeys(dois, events), 6 * 3600)
        seed_plain_publications(stage.dsn, dois)
        worker = stage.supervisor.children[stage.start_worker("trends", concurrency=1)]
        app.send_task("tasks.trends.run_trend", args=(duration, now.isoformat()), queue="trends")
        wait(lambda: q(stage.dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(1,)], 60,
             "a first run finalized")
        before = q(stage.dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1")

        locker = psycopg2.connect(stage.dsn)
        try:
            with locker.cursor() as cur:  # the chunks' staging writes wait: the chord is under way
                cur.execute("LOCK TABLE trending_staging IN SHARE ROW EXCLUSIVE MODE")
            later = now + timedelta(minutes=3)
            app.send_task("tasks.trends.run_trend", args=(duration, later.isoformat()), queue="trends")
            wait(lambda: q(stage.dsn, CHUNK_WAITING) != [(0,)], 60, "a chunk in the chord")
            (dead_run,) = q(stage.dsn, "SELECT run_id FROM trend_run WHERE status = 'running'")[0]
            stage.supervisor.signal("worker-trends", signal.SIGKILL)  # compose restarts it at once
            wait(lambda: worker.restarts == 1 and worker.alive, 30, "the trends worker restarted")
            restarted_at = time.monotonic()
            assert q(stage.dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1") == before
        finally:
            locker.rollback()
            locker.close()

        def recovered_run() -> bool:
            return q(stage.dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(2,)]

        wait(recovered_run, 90, f"a new {duration} run finalized after the restart")
        took = time.monotonic() - restarted_at
        (status, error), = q(stage.dsn, "SELECT status, error FROM trend_run WHERE run_id = %s", (dead_run,))
        assert status == "failed" and "abandoned" in str(error)
        (new_run,), = q(stage.dsn, "SELECT run_id FROM trend_run WHERE status = 'finalized' "
                                   "ORDER BY finished_at DESC LIMIT 1")
        assert {run for _, _, run in q(stage.dsn, "SELECT publication_doi, score, run_id FROM trending")} == {new_run}
        assert "lease of a dead incarnation of this worker given up" in stage.log("worker-trends")
        assert for_process().leases.of(duration).holder() is None
        print(f"FAULT trends worker SIGKILL mid-chord, restarted: {duration} finalized {took:.1f} s after the restart")
        assert took <= 60, f"{took:.0f} s"
    finally:
        stage.close()

