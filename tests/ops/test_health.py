"""`aggregator health`: passes on answering dependencies, fails fast and readably otherwise."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.support.helpers import AGGREGATOR
from worker.config.settings import Settings
from worker.ops.devstack.services import free_port
from worker.ops.health import check

pytestmark = pytest.mark.integration


def test_beat_health_passes_on_a_live_redis(redis_url: str) -> None:
    done = subprocess.run([*AGGREGATOR, "health", "beat"], env={**os.environ, "REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=30)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok   redis"), done.stdout


def test_failures_are_one_line_each_redacted_and_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    closed = free_port()  # nothing listens there
    settings = Settings(postgres_dsn=f"postgresql://aggregator:hunter2@127.0.0.1:{closed}/aggregator",
                        kafka_bootstrap_servers=f"127.0.0.1:{closed}")
    started = time.monotonic()
    assert check("setup", settings=settings) == 1
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["FAIL", "postgres"], ["FAIL", "kafka"]], out
    assert "hunter2" not in out
    assert elapsed < 8, f"checks run concurrently with ~3 s timeouts, took {elapsed:.1f}s"
