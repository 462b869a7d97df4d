"""`aggregator schedule` on real PostgreSQL: the runs' measured lengths come from trend_run and
morning_post, the heatmap and the text are written, and an unreachable database only costs
the measurements."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from worker.ops.cli import main

pytestmark = pytest.mark.integration


def record_runs(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for i, seconds in enumerate((10.0, 12.0, 14.0, 400.0)):  # the last one: a slow year run
            duration = "year" if seconds > 100 else "currently"
            cur.execute(
                "INSERT INTO trend_run (run_id, duration, calculated_at, started_at, finished_at, refreshed_at, "
                "status) VALUES (%s, %s, now(), now() - interval '1 hour', "
                "now() - interval '1 hour' + %s * interval '1 second' - interval '1 second', "
                "now() - interval '1 hour' + %s * interval '1 second', 'finalized')",
                (f"run-{i}", duration, seconds, seconds))
        cur.execute("INSERT INTO trend_run (run_id, duration, calculated_at, status, started_at, finished_at) "
                    "VALUES ('failed', 'today', now(), 'failed', now(), now() + interval '1 hour')")
        cur.execute("INSERT INTO morning_post (day, status, text, claimed_at, posted_at) "
                    "VALUES (current_date, 'posted', 'x', now(), now() + interval '2 seconds')")
    conn.close()


def test_schedule_measures_plans_and_draws(env: dict[str, str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    record_runs(env["POSTGRES_DSN"])
    image = tmp_path / "plan" / "schedule.svg"
    assert main(["schedule", "--output", str(image), "--date", "2026-11-23", "--influx-tasks"]) == 0
    out = capsys.readouterr().out
    assert "trend currently         trends worker   */3 * * * *      +15 s   480       12.0 s median, 14.0 s p95" in out
    assert "trend today" in out and "assumed 30 s" in out  # a failed run is not a length
    assert "morning post" in out and "2.0 s median" in out
    assert "trend year × task_numbers_currently" in out  # the slow year run meets the tasks
    assert image.read_text().startswith("<svg ")
    assert image.with_suffix(".txt").read_text() == out


def test_schedule_without_a_database_assumes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from worker.config.settings import get_settings

    monkeypatch.setenv("POSTGRES_DSN", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("EVENT_STORE", "postgres")
    get_settings.cache_clear()
    try:
        assert main(["schedule", "--output", str(tmp_path / "s.svg"), "--date", "2026-11-23"]) == 0
    finally:
        get_settings.cache_clear()
    captured = capsys.readouterr()
    assert "not measured (PostgreSQL" in captured.err
    assert "7 jobs" in captured.out  # five trends, the post, maintenance: no InfluxDB tasks with EVENT_STORE=postgres
    assert "task_today" not in captured.out
