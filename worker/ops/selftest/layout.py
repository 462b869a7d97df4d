"""InfluxDB: are the buckets and tasks ``aggregator setup`` creates there, as it defines them?
(pure: what the server holds is handed in by :mod:`worker.ops.selftest.influx`)"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from worker.core.influx_layout import BucketSpec, TaskSpec, human_duration
from worker.ops.selftest.compare import Check

_DURATION_PART = re.compile(r"(\d+)(ns|us|µs|ms|s|m|h|d|w)")
_UNIT_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9,
            "d": 86_400 * 10**9, "w": 7 * 86_400 * 10**9}
_SETUP = "run `aggregator setup`"


@dataclass(frozen=True, slots=True)
class FoundBucket:
    name: str
    retention_s: int  # 0 = for ever


@dataclass(frozen=True, slots=True)
class FoundTask:
    name: str
    status: str
    cron: str | None
    offset: str | None  # a Flux duration, e.g. "50s"
    flux: str
    last_run_status: str | None  # "success", "failed", "canceled", or None before the first run
    last_run_error: str | None = None


def flux_duration_s(text: str | None) -> float | None:
    """``"1m50s"`` -> 110.0; ``None`` or ``""`` -> 0.0; anything else -> ``None``."""
    if not text:
        return 0.0
    parts = _DURATION_PART.findall(text)
    if "".join(f"{n}{unit}" for n, unit in parts) != text:
        return None
    return sum(int(n) * _UNIT_NS[unit] for n, unit in parts) / 1e9


def _retention(seconds: int) -> str:
    return "for ever" if seconds == 0 else human_duration(seconds)


def bucket_check(spec: BucketSpec, found: Sequence[FoundBucket]) -> Check:
    name = f"bucket {spec.name}"
    if not found:
        return Check(name, False, f"missing ({spec.holds}): {_SETUP}")
    retention = found[0].retention_s
    if spec.enforce_retention and retention != spec.retention_s:
        return Check(name, False, f"retention {_retention(retention)} != expected {_retention(spec.retention_s)}: "
                                  f"{_SETUP}")
    kept = "" if spec.enforce_retention or retention == spec.retention_s else \
        f" (setup would create it with {_retention(spec.retention_s)}; an existing one keeps its own)"
    return Check(name, True, f"retention {_retention(retention)}{kept}")


def task_check(spec: TaskSpec, flux: str, found: Sequence[FoundTask]) -> Check:
    """The task exists, is active, runs ``spec``'s schedule with setup's Flux, and its last
    run (if it ran yet) succeeded."""
    name = f"task {spec.name}"
    if not found:
        return Check(name, False, f"missing ({spec.description}): {_SETUP}")
    problems = []
    for task in found:
        if task.status != "active":
            problems.append(f"status {task.status} != expected active")
        if task.cron != spec.cron:
            problems.append(f"cron {task.cron!r} != expected {spec.cron!r}")
        if flux_duration_s(task.offset) != spec.offset_s:
            problems.append(f"offset {task.offset!r} != expected {spec.offset_s}s")
        if task.flux != flux:
            problems.append(f"its Flux differs from setup's: {_SETUP}")
        if task.last_run_status not in (None, "success"):
            error = " ".join((task.last_run_error or "").split())[:200]
            problems.append(f"last run {task.last_run_status}" + (f": {error}" if error else ""))
    if problems:
        more = len(problems) - 1
        return Check(name, False, problems[0] + (f" (and {more} more)" if more else ""))
    runs = {task.last_run_status for task in found}
    last = "last run succeeded" if runs == {"success"} else "no run yet" if runs == {None} else "last runs succeeded"
    copies = f"; {len(found)} tasks of that name" if len(found) > 1 else ""
    return Check(name, True, f"{spec.cron} +{spec.offset_s}s, {last}{copies}")
