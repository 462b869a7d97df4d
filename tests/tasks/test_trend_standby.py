"""Two trends workers on the `trends` queue (`-c 1` each; the second a standby host).

* The same duration's run fired twice at once, one on each worker: one computes, the other
  is skipped (the duration's lease, ``RunInFlight``); never two runs of a duration at once.
* The worker holding a run is SIGKILLed mid-chord: the standby computes the chunks still
  queued and, once the dead worker's heartbeat expired, the chunk it held (restored by the
  standby's sweep, worker/celeryapp/liveness.py), so the dead worker's run finalizes; the
  next run, sent as beat sends it, starts once the lease is free and is computed by the standby.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from tests.support.helpers import log_text, q, send_until_started, start_worker, wait_for
from tests.support.trend_seed import seed_events, seed_plain_publications
from worker.trends.planning import datetime_to_ns, token_holder

pytestmark = pytest.mark.faults

LEASE_S = 20
#: A chunk's staging write waiting for the locked table.
CHUNK_WAITING = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                 "AND query ILIKE '%publication_doi = ANY%'")


def node(worker: subprocess.Popen[bytes]) -> str:
    return str(worker.node)  # type: ignore[attr-defined]  # set by start_worker


def trends_env(env: dict[str, str]) -> dict[str, str]:
    # The time limits stay below the lease, as the settings require; no lock timeout, so a
    # chunk waits on the locked staging table until the test lets it go.
    return {**env, "TREND_LOCK_TTL_S": str(LEASE_S), "TREND_CHUNK_SIZE": "50", "PG_LOCK_TIMEOUT_S": "0",
            "TASK_TIME_LIMIT_CHUNK_S": str(LEASE_S - 5), "TASK_TIME_LIMIT_FINALIZE_S": str(LEASE_S - 5)}


def test_the_same_run_fired_on_two_workers_at_once_is_computed_once(env: dict[str, str], spawn) -> None:
    from worker.app import app

    dsn = env["POSTGRES_DSN"]
    now = datetime.now(UTC).replace(microsecond=0)
    dois = [f"10.1101/s{i:04d}" for i in range(500)]
    seed_events(dsn, datetime_to_ns(now), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(dsn, dois)
    workers = [start_worker(spawn, trends_env(env), queue="trends", concurrency=1, name=f"trends{i}")
               for i in range(2)]

    locker = psycopg2.connect(dsn)
    try:
        with locker.cursor() as cur:  # the first run's chunks wait: its lease is held meanwhile
            cur.execute("LOCK TABLE trending_staging IN SHARE ROW EXCLUSIVE MODE")
        first = app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
        second = app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
        results = [first.get(timeout=60), second.get(timeout=60)]
        assert sorted(r["status"] for r in results) == ["skipped", "started"], results
        assert q(dsn, "SELECT count(*) FROM trend_run WHERE duration = 'currently'") == [(1,)]
    finally:
        locker.rollback()
        locker.close()
    wait_for(lambda: q(dsn, "SELECT status FROM trend_run") == [("finalized",)], 60, "the one run finalized")
    skipped_on = [node(w) for w in workers if "run skipped" in log_text(w)]
    started_on = [node(w) for w in workers if "trend run planned" in log_text(w)]
    print(f"TRENDS two workers: started on {started_on}, skipped on {skipped_on}")
    assert len(started_on) == 1 and len(skipped_on) == 1
    # Both workers took one of the two runs: they did run at the same time.
    assert started_on != skipped_on


def test_the_standby_computes_the_next_run_when_the_worker_holding_a_run_is_killed(env: dict[str, str],
                                                                                    spawn) -> None:
    from worker.app import app
    from worker.celeryapp.resources import for_process

    dsn = env["POSTGRES_DSN"]
    now = datetime.now(UTC).replace(microsecond=0)
    dois = [f"10.1101/k{i:04d}" for i in range(500)]  # 10 chunks of 50
    seed_events(dsn, datetime_to_ns(now), dict.fromkeys(dois, 12), 6 * 3600)
    seed_plain_publications(dsn, dois)
    workers = {node(w): w for w in (start_worker(spawn, trends_env(env), queue="trends", concurrency=1,
                                                name=f"trends{i}") for i in range(2))}

    locker = psycopg2.connect(dsn)
    try:
        with locker.cursor() as cur:  # the chunks' staging writes wait: the chord is under way
            cur.execute("LOCK TABLE trending_staging IN SHARE ROW EXCLUSIVE MODE")
        app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
        wait_for(lambda: q(dsn, CHUNK_WAITING) != [(0,)], 60, "a chunk inside the chord")
        (dead_run,) = q(dsn, "SELECT run_id FROM trend_run WHERE status = 'running'")[0]
        token = for_process().leases.of("currently").holder()
        assert token is not None
        holder = workers[str(token_holder(token))]
        (standby,) = [w for w in workers.values() if w is not holder]
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
        killed = time.monotonic()
    finally:
        locker.rollback()
        locker.close()

    # Beat, faster: the next `currently` run is sent until one starts (the expired lease).
    later = now + timedelta(minutes=3)
    started = send_until_started(app, "currently", later.isoformat(), LEASE_S + 60)
    run_id = str(started["run_id"])
    wait_for(lambda: q(dsn, "SELECT status FROM trend_run WHERE run_id = %s", (run_id,)) == [("finalized",)], 60,
             "the next run finalized")
    took = time.monotonic() - killed
    assert started["abandoned"] == []
    assert q(dsn, "SELECT status FROM trend_run WHERE run_id = %s", (dead_run,)) == [("finalized",)]
    assert f"run_id={run_id}" in log_text(standby), "the standby computed the next run"
    assert q(dsn, "SELECT count(DISTINCT run_id) FROM trending WHERE duration = 'currently'") == [(1,)]
    assert q(dsn, "SELECT count(*) FROM trending_staging") == [(0,)]
    # The run is finalized in PostgreSQL before the view refresh and the lease's release.
    wait_for(lambda: for_process().leases.of("currently").holder() is None, 30, "the lease released")
    print(f"FAULT trends worker holding a run SIGKILLed: the standby finalized the next run {took:.1f} s after "
          f"the kill (lease {LEASE_S} s)")
    assert took <= LEASE_S + 60
