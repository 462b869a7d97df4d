"""Prometheus metrics of the bridge (``BRIDGE_METRICS_PORT``; 0 = no endpoint).

A collector reads ``bridge.stats`` at scrape time in the HTTP server's thread, which never
touches the Kafka consumer (librdkafka handles belong to the loop thread); dict fields are
copied in one GIL-atomic operation.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from threading import Thread
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from worker.ingest.bridge.depth import UNKNOWN_DEPTH
from worker.ingest.bridge.state import BridgeStats

PREFIX = "aggregator_bridge"


class HasStats(Protocol):
    """What the collector needs of a bridge (a real ``Bridge`` or a test double)."""

    stats: BridgeStats

    @property
    def topic(self) -> str: ...


class BridgeCollector(Collector):
    """Turns the bridge's ``BridgeStats`` into metric families on every scrape."""

    def __init__(self, bridge: HasStats) -> None:
        self._bridge = bridge

    def describe(self) -> list[Metric]:
        return []  # registered without a collect(): the bridge may not have run a step yet

    def collect(self) -> Iterator[Metric]:
        s = self._bridge.stats
        topic = self._bridge.topic

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield counter("consumed", "Messages taken from Kafka (valid or not).", s.consumed)
        yield counter("polls", "Poll calls of the bridge loop (it keeps polling while paused).", s.polls)
        yield counter("published_batches", "Ingest tasks published to the Celery queue.", s.published_batches)
        yield counter("published_events", "Events published to the Celery queue inside batches.",
                      s.published_events)
        yield counter("dead_lettered", "Invalid messages written (confirmed) to the dead-letter topic.",
                      s.dead_lettered)
        yield counter("pauses", "Times the bridge paused its partitions (backpressure or failing "
                      "downstream).", s.pauses)
        yield counter("confirmed_batches", "Published batches the ingest task confirmed as stored.",
                      s.confirmed_batches)
        yield counter("rewinds", "Partitions read again because a batch was not confirmed in time (Redis lost "
                      "it or its worker died); any increase deserves a look.", s.rewinds)
        yield gauge("in_flight_batches", "Published batches not yet confirmed as stored; the bridge pauses at "
                    "BRIDGE_MAX_IN_FLIGHT (a store outage shows here).", s.in_flight)
        yield gauge("oldest_unconfirmed_seconds", "Age of the oldest published batch not yet confirmed as stored.",
                    s.oldest_unconfirmed_s)
        yield gauge("paused", "1 while the partitions are paused and Kafka holds the data.", int(s.paused))
        yield gauge("assigned_partitions", "Partitions of the topic this bridge owns now (cooperative-sticky: "
                    "with partitions >= bridges every bridge owns at least one).", s.assigned)
        yield gauge("dlq_guard_tripped", "1 while the dead-letter guard holds the partitions (more than "
                    "BRIDGE_MAX_DLQ_RATIO of the last BRIDGE_DLQ_MIN_EVENTS events were invalid; this bridge's "
                    "or another of the group's): only `aggregator bridge resume` lifts it.", int(s.dlq_guard_tripped))
        yield gauge("dlq_window_ratio", "Share of invalid events in the dead-letter guard's window (the guard trips "
                    "above BRIDGE_MAX_DLQ_RATIO once the window is full).", s.dlq_ratio)
        yield counter("dlq_guard_trips", "Times this bridge's dead-letter guard tripped.", s.dlq_guard_trips)
        yield gauge("ceiling_events", "Current dynamic ceiling: events per batch (rate x target interval, "
                    "clamped).", s.ceiling)
        yield gauge("incoming_rate_per_second", "Smoothed incoming rate, events per second.", s.rate_per_s)
        # UNKNOWN_DEPTH means Redis did not answer (treated as "too deep" by the bridge):
        # exported as NaN so a graph shows a gap instead of a 4.6e18 spike.
        depth = math.nan if s.queue_depth >= UNKNOWN_DEPTH else s.queue_depth
        yield gauge("queue_depth", "Tasks waiting in the ingest queue (all priorities; NaN: Redis did "
                    "not answer).", depth)

        for name, doc, values in (
                ("consumer_lag", "Messages in Kafka not yet taken by the bridge, per partition (cached high "
                 "watermark - next offset; frozen while paused).", s.lag),
                ("stored_offset", "Next offset stored for commit per partition (everything before it is in the "
                 "event store or the dead letters).", s.committed_upto)):
            family = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["topic", "partition"])
            for partition, value in sorted(dict(values).items()):
                family.add_metric([topic, str(partition)], value)
            yield family


def make_registry(bridge: HasStats) -> CollectorRegistry:
    """A registry of its own: the bridge's metrics plus the process's CPU and memory."""
    registry = CollectorRegistry()
    registry.register(BridgeCollector(bridge))
    ProcessCollector(registry=registry)
    return registry


def serve_metrics(bridge: HasStats, port: int, addr: str = "0.0.0.0") -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread (all interfaces by default:
    Prometheus scrapes the container from another one); returns (server, thread)."""
    return start_http_server(port, addr=addr, registry=make_registry(bridge))
