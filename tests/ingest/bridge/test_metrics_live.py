"""The bridge's /metrics while it holds back (backpressure), on Tansu and Redis.

`aggregator bridge` with BRIDGE_METRICS_PORT serves the collector from its own thread; the
lag comes from the loop (cached watermarks). Tansu reports high watermarks per record
batch, so the lag here is approximate: the test only needs it positive and bounded.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR, log_text, wait_for
from worker.ops.demo import demo_events

pytestmark = pytest.mark.integration

EVENTS = 1500


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str) -> float:
    return samples[name][0][1]


def test_metrics_show_the_paused_bridge_and_its_lag(env: dict[str, str],
                                                    spawn: Callable[..., subprocess.Popen]) -> None:
    port = free_port()
    env = {**env, "BRIDGE_METRICS_PORT": str(port), "BRIDGE_MIN_BATCH": "10", "BRIDGE_MAX_BATCH": "10",
           "BRIDGE_QUEUE_HIGH_WATERMARK": "2", "BRIDGE_QUEUE_LOW_WATERMARK": "0",
           "BRIDGE_DEPTH_CHECK_INTERVAL_S": "0.2"}
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 5})
    for payload in demo_events(EVENTS, 10, seed=5):
        producer.produce(env["KAFKA_TOPIC"], payload)
    assert producer.flush(30) == 0

    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")

    def paused_with_lag() -> bool:
        samples = scrape(port)
        lag = sum(v for _, v in samples.get("aggregator_bridge_consumer_lag", []))
        return value(samples, "aggregator_bridge_paused") == 1 and lag > 0

    wait_for(lambda: bridge.poll() is not None or paused_with_lag(), 60, "bridge paused with lag in /metrics")
    assert bridge.poll() is None, log_text(bridge)[-3000:]
    samples = scrape(port)
    print({name: rows for name, rows in samples.items() if name.startswith("aggregator_bridge")})
    assert value(samples, "aggregator_bridge_queue_depth") == 2
    assert value(samples, "aggregator_bridge_published_batches_total") == 2
    assert value(samples, "aggregator_bridge_published_events_total") == 20
    assert value(samples, "aggregator_bridge_ceiling_events") == 10
    lag = {labels["partition"]: v for labels, v in samples["aggregator_bridge_consumer_lag"]}
    assert all(labels["topic"] == env["KAFKA_TOPIC"] for labels, _ in samples["aggregator_bridge_consumer_lag"])
    assert 0 < sum(lag.values()) <= EVENTS, lag

    # The bridge's container healthcheck includes this endpoint.
    done = subprocess.run([*AGGREGATOR, "health", "bridge"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=30)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [line.split()[:2] for line in done.stdout.splitlines()] == [["ok", "redis"], ["ok", "kafka"],
                                                                     ["ok", "dlq-guard"], ["ok", "metrics"]]
