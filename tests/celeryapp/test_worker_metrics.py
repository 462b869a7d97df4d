"""A real ingest worker with two pool processes serves one sum of both on WORKER_METRICS_PORT
(prometheus-client's multiprocess mode, worker/celeryapp/metrics.py)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devstack.services import free_port
from tests.support.helpers import count_events, start_worker, wait_for
from worker.core import names
from worker.core.events import decode_event, points_to_wire
from worker.ops.demo import demo_events

pytestmark = pytest.mark.e2e

BATCHES, SIZE = 12, 25


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_two_pool_processes_are_counted_as_one_worker(env: dict[str, str], spawn, tmp_path: Path) -> None:
    from worker.app import app

    port, directory = free_port(), tmp_path / "metrics"
    directory.mkdir(parents=True)
    (directory / "counter_999999.db").write_bytes(b"stale")  # a previous run's file: removed at start
    worker = start_worker(spawn, {**env, "WORKER_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(directory),
                                  "INGEST_RATE_LIMIT": "1000/s"}, queue="ingest", concurrency=2)
    assert not (directory / "counter_999999.db").exists()
    points = [decode_event(raw) for raw in demo_events(BATCHES * SIZE, 40, seed=5)]
    for i in range(BATCHES):
        app.send_task(names.WRITE_BATCH, args=[points_to_wire(points[i * SIZE:(i + 1) * SIZE])], queue="ingest")
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == BATCHES * SIZE, 60, "every batch stored")
    wait_for(lambda: scrape(port).get(("aggregator_ingest_batches_total", (("outcome", "written"),))) == BATCHES,
             30, "every written batch counted")
    got = scrape(port)
    assert got[("aggregator_ingest_events_written_total", ())] == BATCHES * SIZE
    assert got[("aggregator_ingest_write_seconds_count", ())] == BATCHES
    assert got[("aggregator_ingest_outage_seconds", ())] == 0
    # Both pool processes wrote (each keeps its own file), and the sum is over both.
    assert len(list(directory.glob("counter_*.db"))) == 2, sorted(p.name for p in directory.iterdir())
    assert worker.poll() is None
