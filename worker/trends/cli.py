"""`aggregator trends run DURATION [--at TIME]`: one run in this process, phase by phase.

Runs the same steps as the chord (worker/trends/runner.py: plan, chunks, finalize, view
refresh) without a worker, under the same lease, and prints what each phase did and how long it took — the
tool for re-running a trend by hand or checking a deployment.
"""

from __future__ import annotations

import time
from datetime import datetime

from worker.durations import get_durations
from worker.errors import UsageError
from worker.settings import get_settings
from worker.store import open_store
from worker.trends import engine, runner


def run_once(duration_name: str, at: datetime | None) -> int:
    settings = get_settings()
    durations = get_durations()
    if duration_name not in durations:
        raise UsageError(f"unknown duration {duration_name!r}; known: {', '.join(durations)}")
    duration = durations[duration_name]
    store = open_store(settings)
    try:
        t0 = time.perf_counter()
        started = runner.begin(settings, store, duration, engine.run_time_ns(at))  # RunInFlight: exit 75
        plan, token = started.plan, started.token
        t1 = time.perf_counter()
        print(f"run {plan.run_id} at {engine.ns_to_datetime(plan.now_ns).isoformat()}")
        if started.abandoned:
            print(f"  gave up {len(started.abandoned)} earlier run(s) that lost their lease: "
                  f"{', '.join(started.abandoned)}")
        print(f"  select   {t1 - t0:8.3f}s  {plan.dois} DOIs with more than {duration.min_events} events "
              f"in the last {duration.span}, {len(plan.chunks)} chunk(s) of <= {settings.trend_chunk_size}")
        staged = 0
        try:
            for dois in plan.chunks:
                staged += runner.chunk(settings, store, duration, plan.run_id, plan.now_ns, dois, token)
        except BaseException as error:
            runner.fail(settings, plan.run_id, duration_name, token, repr(error))
            raise
        t2 = time.perf_counter()
        print(f"  chunks   {t2 - t1:8.3f}s  {staged} rows computed and staged")
        result = runner.finish(settings, store, plan.run_id, duration_name, plan.now_ns, token)
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
        store.close()
