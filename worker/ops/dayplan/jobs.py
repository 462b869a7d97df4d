"""The day's plan of every scheduled job, and where two of them compete (pure): trend runs
and InfluxDB tasks that pile up make queries time out. docs/operating.md, "The day's schedule".
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from worker.core.cron import parse_cron
from worker.core.durations import Duration
from worker.core.influx_layout import TaskSpec

DAY_S = 86_400
Kind = Literal["trend", "influx", "post", "maintenance"]

#: Where each kind of job runs (the summary's "runs on").
WHERE: dict[Kind, str] = {"trend": "trends worker", "influx": "InfluxDB task", "post": "default worker",
                          "maintenance": "default worker"}

#: What each kind of job holds while it runs. Two runs that hold nothing in common (the
#: morning post and an InfluxDB task) may overlap freely; the others compete.
RESOURCES: dict[Kind, frozenset[str]] = {
    "trend": frozenset({"trends worker", "event store"}),
    "influx": frozenset({"event store"}),
    "post": frozenset({"default worker"}),
    # Its PostgreSQL steps take their locks for milliseconds (worker/maintenance/run.py): what
    # it competes for is the default worker's one slot, with the morning post.
    "maintenance": frozenset({"default worker"}),
}

#: Lengths assumed for a job that has no measured run (seconds).
ASSUMED_S: dict[Kind, float] = {"trend": 30.0, "influx": 10.0, "post": 5.0, "maintenance": 10.0}


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    kind: Kind
    cron: str
    offset_s: int


@dataclass(frozen=True, slots=True)
class Length:
    """How long a job's runs take; the plan uses the 95th percentile: it holds on most days."""

    seconds: float
    measured: tuple[float, ...] = ()

    def describe(self) -> str:
        if not self.measured:
            return f"assumed {self.seconds:g} s"
        runs = sorted(self.measured)
        return (f"{statistics.median(runs):.1f} s median, {self.seconds:.1f} s p95, {runs[-1]:.1f} s max "
                f"of {len(runs)} run(s)")


def length_of(measured: Sequence[float], kind: Kind) -> Length:
    """The plan's length of a job from its measured runs (none: the kind's assumption)."""
    runs = sorted(float(s) for s in measured if s >= 0)
    if not runs:
        return Length(ASSUMED_S[kind])
    p95 = runs[min(len(runs) - 1, int(0.95 * len(runs)))]
    return Length(p95, tuple(runs))


@dataclass(frozen=True, slots=True)
class Run:
    job: Job
    start_s: int  # seconds after midnight UTC
    length_s: float

    @property
    def end_s(self) -> float:
        return self.start_s + self.length_s


@dataclass(frozen=True, slots=True)
class Overlap:
    first: Run
    second: Run

    @property
    def meaning(self) -> str:
        kinds = {self.first.job.kind, self.second.job.kind}
        if self.first.job == self.second.job:
            if kinds == {"trend"}:
                return "the previous run is still running: the overlap lock skips this one"
            return "the previous run is still running"
        if kinds == {"trend"}:
            return "queued on the trends worker (concurrency 1): the later run starts late"
        if kinds <= {"post", "maintenance"}:
            return "queued on the default worker (concurrency 1): the later run starts late"
        return "both load InfluxDB at once"


def scheduled_jobs(durations: Iterable[Duration], trend_offset_s: int, influx_tasks: Iterable[TaskSpec],
                   post_schedule: str, maintenance_schedule: str) -> list[Job]:
    """Every scheduled job of a deployment, in a stable order."""
    jobs = [Job(f"trend {d.name}", "trend", d.schedule, trend_offset_s) for d in durations]
    jobs += [Job(t.name, "influx", t.cron, t.offset_s) for t in influx_tasks]
    return [*jobs, Job("morning post", "post", post_schedule, 0),
            Job("maintenance", "maintenance", maintenance_schedule, 0)]


def starts(job: Job, day: date) -> list[int]:
    """Seconds after midnight UTC at which ``job`` starts on ``day``."""
    # celery-types does not declare crontab's parsed sets (minute, hour, day_of_week, ...).
    cron: Any = parse_cron(job.cron)
    day_of_week = (day.weekday() + 1) % 7  # crontab: 0 = Sunday
    if (day_of_week not in cron.day_of_week or day.day not in cron.day_of_month
            or day.month not in cron.month_of_year):
        return []
    return [hour * 3600 + minute * 60 + job.offset_s
            for hour in sorted(cron.hour) for minute in sorted(cron.minute)]


def day_runs(jobs: Sequence[Job], day: date, lengths: Mapping[str, Length]) -> list[Run]:
    runs = [Run(job, start, lengths[job.name].seconds) for job in jobs for start in starts(job, day)]
    return sorted(runs, key=lambda r: (r.start_s, r.job.name))


def overlaps(runs: Sequence[Run]) -> list[Overlap]:
    """Pairs of runs that compete (:data:`RESOURCES`, or two runs of one job) and whose
    ``[start, end)`` intersect; a run past midnight meets the first runs of the day, as tomorrow."""
    ordered = sorted(runs, key=lambda r: r.start_s)
    shifted = [Run(r.job, r.start_s - DAY_S, r.length_s) for r in ordered if r.end_s > DAY_S]
    found: list[Overlap] = []
    active: list[Run] = []
    for run in [*shifted, *ordered]:
        active = [a for a in active if a.end_s > run.start_s]
        found += [Overlap(a, run) for a in active
                  if run.start_s >= 0 and (a.job == run.job or RESOURCES[a.job.kind] & RESOURCES[run.job.kind])]
        active.append(run)
    return found


def minute_load(runs: Iterable[Run]) -> dict[int, list[Run]]:
    """Minute of the day (0..1439) -> the runs active during some part of it."""
    load: dict[int, list[Run]] = {}
    for run in runs:
        first = int(run.start_s // 60)
        last = int((run.end_s - 1e-9) // 60) if run.length_s > 0 else first
        for minute in range(first, last + 1):
            load.setdefault(minute % 1440, []).append(run)
    return load


@dataclass(frozen=True, slots=True)
class DayPlan:
    day: date
    jobs: tuple[Job, ...]
    lengths: Mapping[str, Length]
    runs: tuple[Run, ...]
    overlaps: tuple[Overlap, ...]


def plan_day(jobs: Sequence[Job], day: date, lengths: Mapping[str, Length]) -> DayPlan:
    runs = day_runs(jobs, day, lengths)
    return DayPlan(day, tuple(jobs), dict(lengths), tuple(runs), tuple(overlaps(runs)))
