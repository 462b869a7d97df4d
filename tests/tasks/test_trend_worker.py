"""Trend runs through a real worker `-Q trends -c 1` (eager mode runs no errback on a
failing chord header, so the failure path is only testable here)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support.helpers import log_text, q, start_worker, wait_for
from tests.support.trend_seed import seed_events, seed_plain_publications
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.e2e

NOW = datetime.now(UTC).replace(microsecond=0)



def run_status(dsn: str, run_id: str) -> str | None:
    rows = q(dsn, "SELECT status FROM trend_run WHERE run_id = %s", (run_id,))
    return rows[0][0] if rows else None


def test_runs_through_a_real_worker_and_a_failing_chunk_keeps_old_rows(env: dict[str, str], spawn) -> None:
    from worker.app import app
    from worker.celeryapp.resources import for_process

    dsn = env["POSTGRES_DSN"]
    dois = [f"10.1101/w{i:04d}" for i in range(450)]
    seed_events(dsn, datetime_to_ns(NOW), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(dsn, dois)
    env = {**env, "TREND_CHUNK_SIZE": "200"}
    worker = start_worker(spawn, env, queue="trends", concurrency=1)

    # 1. A run enqueued like beat does it: rows appear.
    first = app.send_task("tasks.trends.run_trend", args=("currently", NOW.isoformat()), queue="trends")
    wait_for(lambda: q(dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(1,)], 60,
             "first run finalized")
    assert first.get(timeout=10)["chunks"] == 3
    before = q(dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1")
    assert len(before) == 450

    # 2. The first chunk fails (PostgreSQL refuses one DOI's row): the run is failed by that
    #    chunk's errback, with the reason, before the other chunks run (they find it failed and
    #    skip), the lease is released, the old rows stay; the chord's errback changes nothing.
    q(dsn, "ALTER TABLE trending_staging ADD CONSTRAINT refuse_one CHECK (publication_doi <> '10.1101/w0000')")
    later = (NOW + timedelta(minutes=3)).isoformat()
    second = app.send_task("tasks.trends.run_trend", args=("currently", later), queue="trends").get(timeout=30)
    run_id = second["run_id"]
    wait_for(lambda: run_status(dsn, run_id) == "failed", 60, "second run marked failed")
    (error,), = q(dsn, "SELECT error FROM trend_run WHERE run_id = %s", (run_id,))
    assert str(error).startswith("CheckViolation: ") and "refuse_one" in str(error)
    wait_for(lambda: log_text(worker).count("chunk of a run that is no longer running; skipped") == 2, 30,
             "the two other chunks skipped: the run was failed before they ran")
    assert q(dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1") == before
    assert q(dsn, "SELECT count(*) FROM trending_staging") == [(0,)]
    wait_for(lambda: f"run_id={run_id}" in log_text(worker) and "trend run failed" in log_text(worker), 30,
             "errback logged the run id")
    assert for_process().leases.of("currently").holder() is None

    # 3. The lock was released: the next run goes through.
    q(dsn, "ALTER TABLE trending_staging DROP CONSTRAINT refuse_one")
    third = (NOW + timedelta(minutes=6)).isoformat()
    app.send_task("tasks.trends.run_trend", args=("currently", third), queue="trends")
    wait_for(lambda: q(dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(2,)], 60,
             "third run finalized")


@pytest.mark.parametrize("bound", ["events_locked", "lock_timeout", "time_limit", "pool_child_stopped"])
def test_a_hung_run_fails_in_its_limit_and_the_next_run_finalizes(env: dict[str, str], spawn, bound: str) -> None:
    """A run that cannot get on is bounded, and the worker needs no restart by hand:

    * ``events_locked``: another session holds the events table: the run's select gives up
      after PG_LOCK_TIMEOUT_S, and the run is failed (with the reason) and its lease released
      at that moment, while the table is still locked, not when the next run starts;
    * ``lock_timeout``: the staging table is held: each chunk gives up after
      PG_LOCK_TIMEOUT_S, the errback fails the run (the lock still held);
    * ``time_limit``: the same with no lock timeout: the chunk's hard time limit kills its
      pool process;
    * ``pool_child_stopped``: the pool process running a chunk is stopped (SIGSTOP): the hard
      time limit replaces it.

    Each time the old rows stay, the lease is released, and the next run finalizes once the
    table is free."""
    import signal

    import psutil
    import psycopg2

    from worker.app import app
    from worker.celeryapp.resources import for_process

    dsn = env["POSTGRES_DSN"]
    dois = [f"10.1101/h{i:04d}" for i in range(300)]
    seed_events(dsn, datetime_to_ns(NOW), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(dsn, dois)
    limits = ({"PG_LOCK_TIMEOUT_S": "1"} if bound in ("events_locked", "lock_timeout") else
              {"PG_LOCK_TIMEOUT_S": "0", "TASK_TIME_LIMIT_CHUNK_S": "4"})
    worker = start_worker(spawn, {**env, "TREND_CHUNK_SIZE": "200", **limits}, queue="trends", concurrency=1)
    app.send_task("tasks.trends.run_trend", args=("currently", NOW.isoformat()), queue="trends")
    wait_for(lambda: q(dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(1,)], 60,
             "first run finalized")
    before = q(dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1")

    table = "discussion_event" if bound == "events_locked" else "trending_staging"
    blocker = psycopg2.connect(dsn)  # holds the table for the whole second run
    with blocker.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    later = (NOW + timedelta(minutes=3)).isoformat()
    try:
        sent = app.send_task("tasks.trends.run_trend", args=("currently", later), queue="trends")
        if bound == "events_locked":
            with pytest.raises(Exception, match="lock timeout"):
                sent.get(timeout=30)
            second_run = q(dsn, "SELECT run_id FROM trend_run WHERE calculated_at = %s", (later,))[0][0]
            (status, error, took), = q(dsn, "SELECT status, error, extract(epoch FROM finished_at - started_at) "
                                            "FROM trend_run WHERE run_id = %s", (second_run,))
            assert status == "failed" and "lock timeout" in str(error), (status, error)
            print(f"FAULT events table locked during the select: run failed {took:.1f} s after it started "
                  "(PG_LOCK_TIMEOUT_S 1)")
            assert took < 1 + 5
            assert for_process().leases.of("currently").holder() is None
        else:
            second_run = sent.get(timeout=30)["run_id"]
        if bound == "lock_timeout":
            wait_for(lambda: "lock timeout" in log_text(worker), 30, "the chunk's lock wait bounded")
            # The run is given up and its lease released while the table is still locked.
            wait_for(lambda: run_status(dsn, second_run) == "failed", 30, "second run marked failed")
        if bound in ("events_locked", "lock_timeout"):
            wait_for(lambda: for_process().leases.of("currently").holder() is None, 30, "lease released")
        if bound == "pool_child_stopped":
            wait_for(lambda: q(dsn, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND query ILIKE '%publication_doi = ANY%'") != [(0,)], 30, "a chunk waiting")
            [child] = psutil.Process(worker.pid).children()
            child.send_signal(signal.SIGSTOP)
            blocker.rollback()  # the table is free now, but the stopped process cannot go on
        if bound in ("time_limit", "pool_child_stopped"):
            wait_for(lambda: "Hard time limit (4" in log_text(worker), 30, "the chunk killed at its hard limit")
        assert q(dsn, "SELECT publication_doi, score, run_id FROM trending ORDER BY 1") == before
    finally:
        blocker.rollback()
        blocker.close()
    wait_for(lambda: run_status(dsn, second_run) == "failed", 30, "second run failed")
    wait_for(lambda: for_process().leases.of("currently").holder() is None, 30, "lease released")
    third = (NOW + timedelta(minutes=6)).isoformat()
    app.send_task("tasks.trends.run_trend", args=("currently", third), queue="trends")
    wait_for(lambda: q(dsn, "SELECT count(*) FROM trend_run WHERE status = 'finalized'") == [(2,)], 60,
             "third run finalized")
    assert run_status(dsn, second_run) == "failed"
    assert q(dsn, "SELECT count(*) FROM trending_staging") == [(0,)]
    assert worker.poll() is None  # the same worker all along
