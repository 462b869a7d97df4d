"""`python -m bench scale --quick` runs and reports both curves with their same-run baselines.

Only the report's shape is checked (every configuration and size, the ratio columns, CPU
per event per component, the fitted slope); the figures are the benchmark's business.
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


def test_scale_quick_reports_ingest_configurations_and_year_sizes_against_their_baselines() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "scale", "--quick"], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    ingest = {m.group(1): m for m in re.finditer(
        r"^  (\d bridges? / \d workers?)\s+([\d,]+)\s+[\d.]+\s+([\d,]+)\s+([\d.]+)x((?:\s+[\d.]+){6})\s+([\d.]+)",
        out, re.MULTILINE)}
    assert list(ingest) == ["1 bridge / 1 worker", "2 bridges / 1 worker", "1 bridge / 2 workers",
                            "2 bridges / 2 workers"]
    assert ingest["1 bridge / 1 worker"].group(4) == "1.00"  # the baseline is the first row
    for row in ingest.values():
        assert len(row.group(5).split()) == 6  # bridge, worker, PostgreSQL, Redis, Tansu, poller: µs per event
        assert float(row.group(6)) > 0  # their total
    assert "INGEST_RATE_LIMIT=10000/s" in out
    assert re.search(r"per-host capacity .*µs of CPU per event over all components -> [\d,]+ ev/s per fully busy "
                     r"core", out)

    year = re.findall(r"^\s+([\d,]+)\s+(\d+)\s+([\d,]+)\s+\d+(?:\s+[\d.]+){5}\s+([\d.]+)x\s+([\d.]+)x\s+([\d.]+)x",
                      out, re.MULTILINE)
    assert [(events, threshold) for events, threshold, *_ in year] == [
        ("20,000", "30"), ("20,000", "10"), ("40,000", "30"), ("40,000", "10"), ("60,000", "30"), ("60,000", "10")]
    assert year[0][3:] == ("1.0", "1.0", "1.00")  # the baseline: the smallest size at the default threshold
    assert int(year[1][2].replace(",", "")) > int(year[0][2].replace(",", ""))  # lower threshold, more DOIs
    assert re.search(r"total = -?[\d.]+ s \+ -?[\d.]+ s per million events", out)
    assert re.search(r"^\s+60,000\s+20,000\s+[\d.]+\s+[\d,]+", out, re.MULTILINE)  # the cumulative write steps
