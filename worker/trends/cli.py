"""`aggregator trends run DURATION [--at TIME]`: one run in this process, phase by phase.

Runs the same steps as the chord (plan, chunks, finalize, view refresh) without a worker,
under the same overlap lock, and prints what each phase did and how long it took — the
tool for re-running a trend by hand or checking a deployment.
"""

from __future__ import annotations

import time
from datetime import datetime

from worker.durations import get_durations
from worker.errors import EX_TEMPFAIL, OperatorError, UsageError
from worker.settings import get_settings
from worker.store import open_store
from worker.trends import engine, publish


class RunInFlight(OperatorError):
    """Another run of the duration holds the overlap lock: try again when it is done."""

    exit_code = EX_TEMPFAIL


def run_once(duration_name: str, at: datetime | None) -> int:
    settings = get_settings()
    durations = get_durations()
    if duration_name not in durations:
        raise UsageError(f"unknown duration {duration_name!r}; known: {', '.join(durations)}")
    duration = durations[duration_name]
    now_ns = engine.run_time_ns(at)
    from tasks.trends import run_lock

    token = engine.new_token()
    lock = run_lock(duration_name)
    if not lock.acquire(token):
        raise RunInFlight(f"a run of {duration_name} is in flight (lock held by {lock.holder()}); not starting "
                          "another", "Wait for it to finish (at most TREND_LOCK_TTL_S), then run again.")
    store = open_store(settings)
    try:
        t0 = time.perf_counter()
        plan = engine.plan_run(settings, store, duration, now_ns, token)
        t1 = time.perf_counter()
        print(f"run {plan.run_id} at {engine.ns_to_datetime(now_ns).isoformat()}")
        print(f"  select   {t1 - t0:8.3f}s  {plan.dois} DOIs with more than {duration.min_events} events "
              f"in the last {duration.span}, {len(plan.chunks)} chunk(s) of <= {settings.trend_chunk_size}")
        staged = 0
        try:
            for chunk in plan.chunks:
                staged += engine.compute_chunk(settings, store, duration, plan.run_id, now_ns, chunk)
        except Exception as error:
            publish.fail_run(settings.postgres_dsn.get_secret_value(), plan.run_id, repr(error))
            raise
        t2 = time.perf_counter()
        print(f"  chunks   {t2 - t1:8.3f}s  {staged} rows computed and staged")
        result = engine.finalize_run(settings, store, plan.run_id, duration_name, now_ns)
        print(f"  finalize {result.get('finalize_s', 0.0):8.3f}s  {result['status']}: {result['rows']} rows "
              f"now in trending for {duration_name}")
        if result["without_publication"] or result["duplicate_publication"]:
            print(f"           {result['without_publication']} row(s) without a publication and "
                  f"{result['duplicate_publication']} duplicate spelling(s) kept in trending_history only")
        if "view_refresh_s" in result:
            print(f"  view     {result['view_refresh_s']:8.3f}s  trending_covid_papers refreshed")
        print(f"  total    {time.perf_counter() - t0:8.3f}s")
        return 0
    finally:
        lock.release(token)
        store.close()
