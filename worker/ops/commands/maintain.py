"""`aggregator maintain [--at TIME] [--dry-run]`: the beat task's maintenance run in this
process, step by step with each step's time (``--dry-run``: the plan only)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from worker.config.settings import Settings
from worker.core.partitions import Range
from worker.core.retention import Plan
from worker.db.connection import Database
from worker.maintenance.run import Step, maintain


def _span(ranges: Sequence[Range]) -> str:
    first, last = ranges[0].start, ranges[-1].start
    days = f"{first:%Y-%m-%d}" if first == last else f"{first:%Y-%m-%d} .. {last:%Y-%m-%d}"
    return f"{len(ranges)} ({days})"


def _plan_lines(todo: Plan) -> list[str]:
    lines = []
    for action, table, ranges in (("create", "discussion_event", todo.create_events),
                                  ("drop", "discussion_event", todo.drop_events),
                                  ("create", "trending_history", todo.create_history),
                                  ("drop", "trending_history", todo.drop_history)):
        if ranges:
            lines.append(f"  {action:<7} {table} partitions: {_span(ranges)}")
    for level in sorted({level for _, level in todo.thin_history}):
        chosen = [day for day, lv in todo.thin_history if lv == level]
        lines.append(f"  thin    trending_history days to {level.name.lower()}: {_span(chosen)}")
    return lines or ["  nothing to do"]


def _step_line(step: Step) -> str:
    state = "ok  " if step.done else "LATER"
    return f"{state} {step.action:<16} {step.target:<36} {step.seconds:7.3f}s  {step.detail}"


def run(args: argparse.Namespace, settings: Settings) -> int:
    now = args.at or datetime.now(UTC)
    policy = settings.retention_policy()
    # Each step on stderr as it ends (thinning a backlog takes minutes); the table at the end.
    report = maintain(Database.from_settings(settings), policy, now, dry_run=args.dry_run,
                      on_step=lambda step: print(f"  {_step_line(step)}", file=sys.stderr, flush=True))
    print(f"maintenance at {now.isoformat()}: events kept {policy.event_retention_days} d; history every run "
          f"{policy.history_full_days} d, hourly to {policy.history_hourly_days} d, daily to "
          f"{policy.history_retention_days} d")
    if args.dry_run:
        print("plan (dry run, nothing changed):")
        print("\n".join(_plan_lines(report.plan)))
        return 0
    for step in report.steps:
        print(f"  {_step_line(step)}")
    print(f"  total {report.seconds:.3f}s" + (f", {len(report.skipped)} step(s) left for the next run"
                                              if report.skipped else ""))
    return 0
