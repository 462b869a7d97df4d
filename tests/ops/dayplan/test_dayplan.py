"""The day's plan (worker/ops/dayplan): cron starts, lengths, overlaps, the heatmap and its text."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import pytest

from worker.config.settings import Settings
from worker.core.durations import DEFAULT_DURATIONS, build_durations
from worker.ops.dayplan.heatmap import OVERLAP, render_svg, summary
from worker.ops.dayplan.jobs import (
    ASSUMED_S,
    Job,
    Length,
    Run,
    day_runs,
    length_of,
    overlaps,
    plan_day,
    scheduled_jobs,
    starts,
)
from worker.store.influx.store import layout_from_settings

pytestmark = pytest.mark.unit

MONDAY = date(2026, 11, 23)
SVG = "{http://www.w3.org/2000/svg}"


def job(name: str, cron: str, offset_s: int = 0, kind: str = "trend") -> Job:
    return Job(name, kind, cron, offset_s)  # type: ignore[arg-type]


def product_plan(lengths: dict[str, float] | None = None) -> tuple[list[Job], dict[str, Length]]:
    settings = Settings()
    jobs = scheduled_jobs(build_durations().values(), settings.trend_start_offset_s,
                          layout_from_settings(settings).tasks(), settings.post_schedule,
                          settings.maintenance_schedule)
    measured = {name: [seconds] for name, seconds in (lengths or {}).items()}
    return jobs, {j.name: length_of(measured.get(j.name, []), j.kind) for j in jobs}


def test_starts_are_cron_ticks_plus_the_offset() -> None:
    assert starts(job("t", "*/20 1 * * *", 15), MONDAY) == [3615, 4815, 6015]
    assert starts(job("t", "0 0 * * 1"), MONDAY) == [0]  # Mondays only (crontab: 0 = Sunday)
    assert starts(job("t", "0 0 * * 0"), MONDAY) == []
    assert starts(job("t", "0 0 24 * *"), MONDAY) == []
    assert len(starts(job("t", "* * * * *"), MONDAY)) == 1440


def test_lengths_are_the_95th_percentile_of_the_measured_runs_or_an_assumption() -> None:
    assert length_of([], "influx") == Length(ASSUMED_S["influx"])
    runs = [float(s) for s in range(1, 101)]
    length = length_of(runs, "trend")
    assert length.seconds == 96.0 and length.measured
    assert length.describe() == "50.5 s median, 96.0 s p95, 100.0 s max of 100 run(s)"
    assert length_of([3.0], "trend").seconds == 3.0


def run(name: str, start: int, length: float, kind: str = "trend") -> Run:
    return Run(job(name, "* * * * *", kind=kind), start, length)


def test_overlaps_of_competing_runs_only() -> None:
    a, b = run("a", 100, 30), run("b", 120, 5)
    post = run("post", 121, 5, kind="post")
    task = run("task", 122, 5, kind="influx")
    found = overlaps([a, b, post, task])
    pairs = {(o.first.job.name, o.second.job.name) for o in found}
    # the post holds nothing the others need; the trend runs share the worker and InfluxDB
    assert pairs == {("a", "b"), ("a", "task"), ("b", "task")}
    assert "queued on the trends worker" in next(o for o in found if o.second.job.name == "b").meaning
    assert overlaps([run("a", 0, 10), run("b", 10, 5)]) == []  # [start, end): touching is fine


def test_a_run_longer_than_its_period_overlaps_itself() -> None:
    slow = job("trend slow", "*/3 * * * *", 15)
    runs = day_runs([slow], MONDAY, {"trend slow": Length(200.0)})
    found = overlaps(runs)
    assert len(found) == 480  # every run meets the next, and the last one tomorrow's first
    assert "overlap lock skips" in found[0].meaning


def test_a_run_past_midnight_meets_the_first_runs_of_the_day() -> None:
    late, early = run("late", 86_390, 30), run("early", 5, 10)
    assert [(o.first.job.name, o.second.job.name) for o in overlaps([early, late])] == [("late", "early")]


def test_the_products_schedule_has_only_the_overlaps_its_specification_implies() -> None:
    """SPEC §3 fixes the trend crons; `currently` (*/3) and `today` (1-59/10) both fire at
    minutes 21 and 51 and queue on the one trends worker. Everything else (the InfluxDB
    tasks' minutes and offsets) is chosen to meet nothing, with runs of 30 s (trends) and
    10 s (tasks), and even with 40 s trend runs."""
    for trend_s in (30.0, 40.0):
        jobs, lengths = product_plan({f"trend {d.name}": trend_s for d in DEFAULT_DURATIONS})
        plan = plan_day(jobs, MONDAY, lengths)
        assert {(o.first.job.name, o.second.job.name) for o in plan.overlaps} == {
            ("trend currently", "trend today")}
        assert {o.second.start_s // 60 % 60 for o in plan.overlaps} == {21, 51}


def test_a_slow_year_run_is_flagged() -> None:
    jobs, lengths = product_plan({"trend year": 600.0})  # 02:04:15 for ten minutes
    plan = plan_day(jobs, MONDAY, lengths)
    met = {o.second.job.name for o in plan.overlaps if o.first.job.name == "trend year"}
    assert {"trend currently", "task_numbers_currently", "task_today", "task_numbers_today"} <= met


@pytest.fixture(scope="module")
def svg_and_text() -> tuple[ET.Element, str, int]:
    jobs, lengths = product_plan()
    plan = plan_day(jobs, MONDAY, lengths)
    return ET.fromstring(render_svg(plan)), summary(plan, "schedule.svg"), len(plan.overlaps)


def test_the_heatmap_is_one_cell_per_minute_with_overlaps_framed(svg_and_text: tuple[ET.Element, str, int]) -> None:
    root, _, _ = svg_and_text
    cells = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert len(cells) == 24 * 60
    framed = [c for c in cells if c.get("stroke") == OVERLAP]
    assert len(framed) == 48  # minutes 21 and 51 of every hour
    tip = framed[0].findtext(f"{SVG}title") or ""
    assert tip.startswith("00:21: ") and "trend currently" in tip and "OVERLAP" in tip
    quiet = next(c for c in cells if (c.findtext(f"{SVG}title") or "").startswith("02:04: "))
    assert "trend year" in (quiet.findtext(f"{SVG}title") or "")


def test_the_text_summary_names_every_job_and_the_overlaps(svg_and_text: tuple[ET.Element, str, int]) -> None:
    _, text, count = svg_and_text
    assert text.startswith("Scheduled jobs on 2026-11-23 (UTC): 16 jobs, ")
    for name in ("trend currently", "trend year", "task_today", "task_numbers_year", "morning post"):
        assert f"  {name} " in text
    assert "assumed 30 s" in text and "assumed 10 s" in text
    assert f"overlaps: {count} pair(s) of runs, 1 pair(s) of jobs" in text
    assert "trend currently × trend today: 48 time(s), at 00:21:15" in text
    assert text.rstrip().endswith("heatmap: schedule.svg")


def test_the_maintenance_task_is_planned_on_the_default_worker_beside_the_post() -> None:
    settings = Settings()
    jobs = scheduled_jobs(build_durations().values(), settings.trend_start_offset_s, [], settings.post_schedule,
                          settings.maintenance_schedule)
    [maintenance] = [j for j in jobs if j.kind == "maintenance"]
    assert (maintenance.cron, maintenance.offset_s) == ("17 * * * *", 0)
    lengths = {j.name: length_of([], j.kind) for j in jobs}
    plan = plan_day(jobs, MONDAY, lengths)
    assert sum(r.job is maintenance for r in plan.runs) == 24
    assert not [o for o in plan.overlaps if maintenance in (o.first.job, o.second.job)]  # at :17, beside nothing
    # A post slowed by the X API still running when maintenance starts: one waits for the other.
    late = [run("morning post", 5 * 3600 + 59 * 60, 120.0, "post"), run("maintenance", 6 * 3600, 10.0, "maintenance")]
    [overlap] = overlaps(late)
    assert overlap.meaning.startswith("queued on the default worker")
