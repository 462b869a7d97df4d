"""`aggregator schedule`: measure, plan, draw. A source of run lengths that does not answer
costs only its measurements: its jobs get the assumed lengths."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2

from worker.config.settings import Settings
from worker.core.failures import first_line
from worker.db.connection import Database
from worker.ops.dayplan.heatmap import render_svg, summary
from worker.ops.dayplan.jobs import length_of, plan_day, scheduled_jobs
from worker.ops.health import query
from worker.store.influx.store import InfluxStore, layout_from_settings

_TREND_RUNS = """
SELECT duration, extract(epoch FROM coalesce(refreshed_at, finished_at) - started_at)::float8
FROM trend_run WHERE status = 'finalized' AND started_at > now() - %s * interval '1 day'
"""
_POSTS = """
SELECT extract(epoch FROM posted_at - claimed_at)::float8 FROM morning_post
WHERE status = 'posted' AND claimed_at > now() - %s * interval '1 day'
"""


def run(args: argparse.Namespace, settings: Settings) -> int:
    with_influx = settings.event_store == "influxdb" if args.influx_tasks is None else args.influx_tasks
    jobs = scheduled_jobs(settings.durations().values(), settings.trend_start_offset_s,
                          layout_from_settings(settings).tasks() if with_influx else [], settings.post_schedule,
                          settings.maintenance_schedule)
    measured: dict[str, list[float]] = defaultdict(list)  # job name -> run lengths (seconds)
    try:
        runs, posts = query(Database.from_settings(settings).dsn, _TREND_RUNS, _POSTS, params=(args.days,),
                            application_name="aggregator-schedule", timeout_s=settings.connect_timeout_s)
        for duration, seconds in runs:
            measured[f"trend {duration}"].append(float(seconds))
        measured["morning post"] = [float(seconds) for (seconds,) in posts]
    except psycopg2.Error as error:
        print(f"trend and post lengths not measured (PostgreSQL: {first_line(error)}); assumed instead",
              file=sys.stderr)
    if with_influx and settings.influxdb_v2_url:
        try:
            with closing(InfluxStore.from_settings(settings)) as store:
                measured.update(store.task_run_seconds(datetime.now(UTC) - timedelta(days=args.days)))
        except Exception as error:  # an unreachable InfluxDB only costs the measurements
            print(f"InfluxDB task lengths not measured ({first_line(error)}); assumed instead", file=sys.stderr)
    lengths = {job.name: length_of(measured.get(job.name, []), job.kind) for job in jobs}
    plan = plan_day(jobs, args.date or datetime.now(UTC).date(), lengths)

    image = Path(args.output)
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_text(render_svg(plan), encoding="utf-8")
    text = summary(plan, str(image))
    image.with_suffix(".txt").write_text(text, encoding="utf-8")
    print(text, end="")
    return 0
