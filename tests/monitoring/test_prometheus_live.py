"""The real Prometheus against the product's endpoints: every target up, and the alert
rules fire on the product's real metrics: a duration whose trends worker stopped an hour
ago is stale, and a stopped worker is a down target. The rules are the repository's, with
their `for:` shortened to a second (everything else as deployed)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR, start_worker, wait_for

pytestmark = pytest.mark.e2e

RULES = Path(__file__).resolve().parents[2] / "monitoring" / "prometheus" / "alerts.yml"


def api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as response:
        return json.loads(response.read())["data"]


def firing(port: int) -> set[tuple[str, str]]:
    return {(alert["labels"]["alertname"], alert["labels"].get("duration") or alert["labels"].get("job", ""))
            for alert in api(port, "alerts")["alerts"] if alert["state"] == "firing"}


def test_targets_up_and_alerts_fire_on_real_metrics(env: dict[str, str], spawn, tmp_path: Path) -> None:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: run scripts/system-packages.sh (Debian package prometheus)"
    fresh = timedelta(minutes=1)
    with psycopg2.connect(env["POSTGRES_DSN"]) as conn, conn.cursor() as cur:
        for name, age in {"currently": timedelta(hours=1), "today": fresh, "week": fresh, "month": fresh,
                          "year": fresh}.items():  # currently's trends stopped an hour ago
            cur.execute("INSERT INTO trend_run (run_id, duration, calculated_at, status, started_at, finished_at) "
                        "VALUES (%s, %s, now() - %s, 'finalized', now() - interval '30 days', now() - %s)",
                        (f"{name}:live", name, age, age))
    conn.close()
    exporter_port, worker_port, prometheus_port = free_port(), free_port(), free_port()
    spawn([*AGGREGATOR, "exporter", "--port", str(exporter_port)], env, "exporter")
    worker = start_worker(spawn, {**env, "WORKER_METRICS_PORT": str(worker_port),
                                  "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "worker-metrics")},
                          queue="trends", concurrency=1)
    (tmp_path / "alerts.yml").write_text(re.sub(r"for: \d+m", "for: 1s", RULES.read_text()))
    (tmp_path / "prometheus.yml").write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
rule_files: [alerts.yml]
scrape_configs:
  - job_name: aggregator-exporter
    static_configs: [{{targets: ["127.0.0.1:{exporter_port}"]}}]
  - job_name: aggregator-worker-trends
    static_configs: [{{targets: ["127.0.0.1:{worker_port}"]}}]
""")
    check = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    spawn([binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{prometheus_port}"], dict(os.environ), "prometheus")

    def all_up() -> bool:
        targets = api(prometheus_port, "targets")["activeTargets"]
        return len(targets) == 2 and all(t["health"] == "up" for t in targets)

    wait_for(all_up, 60, "every target up in Prometheus")
    wait_for(lambda: ("TrendStale", "currently") in firing(prometheus_port), 60, "TrendStale for currently")
    assert not {d for alert, d in firing(prometheus_port) if alert == "TrendStale"} - {"currently"}

    os.killpg(worker.pid, 9)  # the trends worker stops
    wait_for(lambda: ("TargetDown", "aggregator-worker-trends") in firing(prometheus_port), 60,
             "TargetDown for the trends worker")
    assert ("TargetDown", "aggregator-exporter") not in firing(prometheus_port)
