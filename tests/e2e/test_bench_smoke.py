"""The benchmark commands run, at toy sizes, and report what the README quotes.

Figures are not checked (speed is the benchmarks' job, not the tests'); this only keeps
`python -m bench` and `python -m bench.full_run` working as the code under them changes.
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
