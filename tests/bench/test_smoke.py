"""The benchmark commands run, at toy sizes, and report what the README quotes.

Figures are not checked (speed is the benchmarks' job, not the tests'); this only keeps
`python -m bench`, `python -m bench.full_run`, `python -m bench soak` and
`python -m bench.year_scale` working as the code under them changes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def run(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_ingest_bench_reports_both_sides() -> None:
    out = run("bench", "--only", "ingest", "--events", "3000", "--baseline-events", "300")
    assert re.search(r"timed from the consumer group join .*: product [\d,]+ ev/s \| baseline .* ratio [\d.]+x", out)
    assert re.search(r"wall from start, start-up included on both sides: product [\d.]+ s \| baseline", out)
    assert "consumed=3000 " in out
    assert "durable defaults" in out


def test_full_run_reports_every_phase() -> None:
    out = run("bench.full_run", "--events", "3000", "--dois", "60")
    for phase in ("select", "chunks", "finalize", "view refresh", "run total"):
        assert re.search(rf"^  {phase}\s+\d+\.\d\d$", out, re.MULTILINE), phase
    assert "celery" not in out.lower()  # the worker's banner stays out of the results


def test_soak_quick_goes_through_every_kind_of_maintenance_step() -> None:
    out = run("bench", "soak", "--quick")
    days = [line for line in out.splitlines() if re.match(r"^\s+\d+ \d{4}-\d\d-\d\d ", line)]
    assert len(days) == 4
    assert "runs replayed" in days[1] and not any("runs replayed" in day for day in (days[0], *days[2:]))
    replayed_rows = re.search(r"rows/run: +(\d+)", days[1])
    assert replayed_rows and int(replayed_rows.group(1)) > 0  # a replayed run leaves the rows a real one did
    assert "discussion_event_p2025" in days[0]  # a month past the retention dropped
    assert any("thinned" in day for day in days) and any("trending_history_p" in day for day in days)
    assert "first event month dropped on day 0, first history day dropped on day 3" in out
    for name in ("currently", "today", "week", "month", "year"):
        assert re.search(rf"^  {name}\s+run: +\d+ ms mean", out, re.MULTILINE), name


def test_year_scale_quick_reports_both_sides_and_the_write_cost() -> None:
    out = run("bench.year_scale", "--quick", "--runs", "1")
    for side in ("baseline", "product", "product, 1 connection"):
        assert re.search(rf"^{side} run 1\s+\d+\.\d\d\s+\d+\.\d\d", out, re.MULTILINE), side
    for side in ("baseline", "product"):  # the write cost: the 1-connection runs share the product's database
        assert re.search(rf"^{side}\s+\d+\.\d\s+[\d,]+\s+\d+\.\d", out, re.MULTILINE), side
    assert re.search(r"year run, best of 1: product [\d.]+ s \(2 connections\) \| product on 1 connection "
                     r"[\d.]+ s \| baseline [\d.]+ s", out)
    assert "product / baseline: write time" in out
