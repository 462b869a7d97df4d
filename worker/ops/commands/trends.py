"""`aggregator trends run DURATION [--at TIME]`: the chord's steps (worker/trends/lifecycle.py)
in this process, under the same lease, printing what each phase did and how long it took."""

from __future__ import annotations

import argparse
import sys
import time

from worker.celeryapp.resources import Resources
from worker.config.settings import Settings
from worker.core.failures import UsageError
from worker.core.progress import Progress
from worker.trends.lifecycle import failure_reason
from worker.trends.planning import ns_to_datetime, run_time_ns


def run(args: argparse.Namespace, settings: Settings) -> int:
    duration_name = args.duration
    durations = settings.durations()
    if duration_name not in durations:
        raise UsageError(f"unknown duration {duration_name!r}; known: {', '.join(durations)}")
    duration = durations[duration_name]
    resources = Resources(settings)
    runs = resources.trend_runs
    try:
        t0 = time.perf_counter()
        started = runs.begin(duration, run_time_ns(args.at))  # RunInFlight: exit 75
        plan, token = started.plan, started.token
        t1 = time.perf_counter()
        print(f"run {plan.run_id} at {ns_to_datetime(plan.now_ns).isoformat()}")
        if started.abandoned:
            print(f"  gave up {len(started.abandoned)} earlier run(s) that lost their lease: "
                  f"{', '.join(started.abandoned)}")
        print(f"  select   {t1 - t0:8.3f}s  {plan.dois} DOIs with more than {duration.min_events} events "
              f"in the last {duration.span}, {len(plan.chunks)} chunk(s) of <= {settings.trend_chunk_size}")
        staged = 0
        # Chunk by chunk on stderr (a `year` run has ~116): the report above and below stays on stdout.
        progress = Progress("chunks", len(plan.chunks), sys.stderr.write, terminal=sys.stderr.isatty())
        try:
            for dois in plan.chunks:
                staged += runs.chunk(duration, plan.run_id, plan.now_ns, dois, token)
                progress.advance()
            progress.finish()
        except BaseException as error:
            runs.fail(duration, plan.run_id, token, failure_reason(error))
            raise
        t2 = time.perf_counter()
        print(f"  chunks   {t2 - t1:8.3f}s  {staged} rows computed and staged")
        result = runs.finish(duration, plan.run_id, plan.now_ns, token)
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
        resources.close()
