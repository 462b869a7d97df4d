"""`python -m bench.rollup --quick` runs and reports, for each order and size, the runs with
and without the day rollup (also at fixed DOIs) and ingest with and without its mark. Only
the report's shape and the DOI check are asserted; the figures are the benchmark's business."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def test_rollup_quick_reports_both_paths_for_each_order_and_size() -> None:
    done = subprocess.run([sys.executable, "-m", "bench.rollup", "--quick", "--runs", "1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout[done.stdout.rindex("machine:"):]  # the table is printed again after each size: the last
    rows = re.findall(r"^(time|random)\s+([\d,]+)(?:\s+[\d.,/]+){10}\s+(True|False)$", report, re.MULTILINE)
    assert [(order, size) for order, size, _ in rows] == [("time", "20,000"), ("time", "40,000"),
                                                          ("random", "20,000"), ("random", "40,000")]
    assert all(same == "True" for *_, same in rows)  # the rollup's year select found the raw path's DOIs
    stale = re.findall(r"^  (time|random)\s+([\d,]+)  0 days [\d.]+  30 days [\d.]+  120 days [\d.]+  / events [\d.]+$",
                       report, re.MULTILINE)
    assert stale == [(order, size) for order, size, _ in rows]
    fixed = re.findall(r"^  (time|random)\s+([\d,]+)  min_events\s+\d+\s+[\d,]+ DOIs  [\d.]+ / [\d.]+  "
                       r"\([\d.]+x / [\d.]+x\)$", report, re.MULTILINE)
    assert fixed == [(order, size) for order, size, _ in rows]
    assert re.findall(r"^  (time|random)\s+[\d,]+ /\s+[\d,]+  \([\d.]+x the time\)$", report,
                      re.MULTILINE) == ["time", "random"]
