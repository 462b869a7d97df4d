"""The bridge's Prometheus collector: names and values come from ``BridgeStats`` at scrape time."""

from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devstack.services import free_port
from worker.ingest.bridge.depth import UNKNOWN_DEPTH
from worker.ingest.bridge.metrics import make_registry, serve_metrics
from worker.ingest.bridge.state import BridgeStats

pytestmark = pytest.mark.unit


@dataclass
class FakeBridge:
    topic: str = "events"
    stats: BridgeStats = field(default_factory=BridgeStats)


def scrape(bridge: FakeBridge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(make_registry(bridge)).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def stats() -> BridgeStats:
    return BridgeStats(consumed=1200, published_batches=7, published_events=1180, dead_lettered=20, paused=True,
                       pauses=3, ceiling=417, rate_per_s=83.5, queue_depth=12,
                       committed_upto={0: 600, 1: 580}, lag={0: 40, 1: 0}, dlq_guard_tripped=True, dlq_ratio=0.625,
                       dlq_guard_trips=1, assigned=2)


def test_collector_exposes_the_bridge_stats() -> None:
    samples = scrape(FakeBridge(stats=stats()))
    assert samples[("aggregator_bridge_consumed_total", ())] == 1200
    assert samples[("aggregator_bridge_published_batches_total", ())] == 7
    assert samples[("aggregator_bridge_published_events_total", ())] == 1180
    assert samples[("aggregator_bridge_dead_lettered_total", ())] == 20
    assert samples[("aggregator_bridge_pauses_total", ())] == 3
    assert samples[("aggregator_bridge_paused", ())] == 1
    assert samples[("aggregator_bridge_ceiling_events", ())] == 417
    assert samples[("aggregator_bridge_incoming_rate_per_second", ())] == 83.5
    assert samples[("aggregator_bridge_queue_depth", ())] == 12
    assert samples[("aggregator_bridge_dlq_guard_tripped", ())] == 1
    assert samples[("aggregator_bridge_assigned_partitions", ())] == 2
    assert samples[("aggregator_bridge_dlq_window_ratio", ())] == 0.625
    assert samples[("aggregator_bridge_dlq_guard_trips_total", ())] == 1
    lag = {labels: value for (name, labels), value in samples.items() if name == "aggregator_bridge_consumer_lag"}
    assert lag == {(("partition", "0"), ("topic", "events")): 40, (("partition", "1"), ("topic", "events")): 0}
    assert samples[("aggregator_bridge_stored_offset", (("partition", "1"), ("topic", "events")))] == 580
    assert ("process_cpu_seconds_total", ()) in samples or ("process_virtual_memory_bytes", ()) in samples


def test_values_are_read_at_scrape_time() -> None:
    bridge = FakeBridge()
    registry = make_registry(bridge)
    bridge.stats.published_events = 5
    bridge.stats.lag = {2: 9}
    text = generate_latest(registry).decode()
    assert "aggregator_bridge_published_events_total 5.0" in text
    assert 'aggregator_bridge_consumer_lag{partition="2",topic="events"} 9.0' in text
    assert "aggregator_bridge_paused 0.0" in text


def test_unknown_queue_depth_is_nan_not_a_huge_number() -> None:
    samples = scrape(FakeBridge(stats=BridgeStats(queue_depth=UNKNOWN_DEPTH)))
    assert math.isnan(samples[("aggregator_bridge_queue_depth", ())])


def test_serve_metrics_answers_over_http() -> None:
    port = free_port()
    server, thread = serve_metrics(FakeBridge(stats=stats()), port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body = response.read().decode()
        assert "aggregator_bridge_ceiling_events 417.0" in body
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
