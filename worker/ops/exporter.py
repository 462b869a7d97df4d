"""The product's state as Prometheus metrics, read from PostgreSQL, Redis and Kafka at each
scrape (``aggregator exporter``): one process sees what no single worker does. A source that
does not answer is a 0 in ``aggregator_exporter_source_up``, not a failed scrape. The
metrics: docs/operating.md, "Metrics and alerts".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.celeryapp.beat import BEAT_LOCK_KEY
from worker.celeryapp.resources import redis_client
from worker.config.settings import Settings
from worker.db.connection import Database
from worker.ingest.bridge.guard_state import RedisGuardRecords
from worker.ingest.deadletter import replay_group
from worker.ingest.kafka_config import group_lag
from worker.ingest.redis_memory import MemoryUse
from worker.ops.health import query, queue_depths
from worker.trends.freshness import stale_after

log = logging.getLogger(__name__)

#: Each source is given this long per scrape (Prometheus's default scrape timeout is 10 s).
SOURCE_TIMEOUT_S = 3.0

_LAST_RUNS = """
SELECT DISTINCT ON (duration) duration, extract(epoch FROM clock_timestamp() - finished_at), rows_written,
       extract(epoch FROM planned_at - started_at), extract(epoch FROM finalize_at - planned_at),
       extract(epoch FROM finished_at - finalize_at), extract(epoch FROM refreshed_at - finished_at)
FROM trend_run WHERE status = 'finalized'
ORDER BY duration, finished_at DESC
"""
_RUNS_24H = """
SELECT duration, status, count(*) FROM trend_run
WHERE started_at > clock_timestamp() - interval '24 hours' GROUP BY 1, 2
"""
# Seconds since the product's first trend run: what never happened yet ages from it (docs/operating.md).
_RUNNING = "SELECT extract(epoch FROM clock_timestamp() - min(started_at)) FROM trend_run"
_LAST_POST = ("SELECT extract(epoch FROM clock_timestamp() - max(posted_at)) FROM morning_post "
              "WHERE status = 'posted'")
PHASES = ("plan", "chunks", "finalize", "refresh")
PREFIX = "aggregator"


def _gauge(name: str, documentation: str, **kwargs: Any) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, **kwargs)


class StateCollector(Collector):
    """Reads PostgreSQL, Redis and Kafka on every scrape; built from the settings."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._dsn = Database.from_settings(settings).dsn

    def describe(self) -> list[Metric]:
        return []  # nothing is read at registration: the sources may not be up yet

    def collect(self) -> Iterator[Metric]:
        up = _gauge("exporter_source_up", "1 when the source answered this scrape", labels=["source"])
        for source, read in (("postgres", self._postgres), ("redis", self._redis), ("kafka", self._kafka)):
            try:
                yield from read()
                up.add_metric([source], 1)
            except Exception as error:  # one line in the log, a 0 in the metric: never a failed scrape
                log.warning("exporter source did not answer", extra={"source": source, "error": str(error)[:300]})
                up.add_metric([source], 0)
        yield up

    def _postgres(self) -> list[Metric]:
        s = self._settings
        last_runs, runs, ((running,),), ((post,),) = query(
            self._dsn, _LAST_RUNS, _RUNS_24H, _RUNNING, _LAST_POST, application_name="aggregator-exporter",
            timeout_s=SOURCE_TIMEOUT_S)
        last = {row[0]: row[1:] for row in last_runs}
        ages = _gauge("trend_age_seconds", "Seconds since the duration's last finalized run finished (before its "
                      "first: since the product's first run)", labels=["duration"])
        bound = _gauge("trend_stale_after_seconds", "Age of the last finalized run past which the duration is stale",
                       labels=["duration"])
        rows = _gauge("trend_last_run_rows", "Rows the last finalized run published", labels=["duration"])
        phases = _gauge("trend_last_run_phase_seconds", "Seconds each phase of the last finalized run took",
                        labels=["duration", "phase"])
        for duration in s.durations().values():
            bound.add_metric([duration.name], stale_after(duration, s).total_seconds())
            age, written, *spans = last.get(duration.name, (running, None))
            if age is not None:
                ages.add_metric([duration.name], float(age))
            if duration.name not in last:
                continue
            rows.add_metric([duration.name], float(written or 0))
            for phase, seconds in zip(PHASES, spans, strict=True):
                if seconds is not None:
                    phases.add_metric([duration.name, phase], float(seconds))
        by_status = _gauge("trend_runs_24h", "Trend runs started in the last 24 hours", labels=["duration", "status"])
        for duration_name, status, count in runs:
            by_status.add_metric([duration_name, status], float(count))
        posted = _gauge("morning_post_age_seconds", "Seconds since the morning post last went out (before the "
                        "first: since the product's first run)")
        if (post_age := post if post is not None else running) is not None:
            posted.add_metric([], float(post_age))
        return [ages, bound, rows, phases, by_status, posted]

    def _redis(self) -> list[Metric]:
        s = self._settings
        with redis_client(s, SOURCE_TIMEOUT_S) as client:
            depths = queue_depths(client, s)
            memory = MemoryUse.read(client)
            stopped = RedisGuardRecords(client, s.kafka_group_id, s.kafka_topic).read() is not None
            beat_held = client.exists(BEAT_LOCK_KEY)
        unacked = depths.pop("unacked")
        depth = _gauge("queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for queue, waiting in depths.items():
            depth.add_metric([queue], float(waiting))
        return [
            depth,
            _gauge("queue_unacked", "Messages handed to workers and not acknowledged yet (all queues)",
                   value=float(unacked)),
            _gauge("dead_letter_guard_stopped",
                   "1 while the dead-letter guard's stop is in force (the bridges consume nothing)",
                   value=1.0 if stopped else 0.0),
            _gauge("beat_lock_held", "1 while a beat holds the scheduler's lock (one beat is active and firing)",
                   value=1.0 if beat_held else 0.0),
            _gauge("redis_memory_used_bytes", "Memory Redis uses (INFO used_memory)", value=float(memory.used)),
            _gauge("redis_memory_max_bytes", "Redis's maxmemory (0: no limit); at it Redis refuses new messages",
                   value=float(memory.limit)),
        ]

    def _kafka(self) -> list[Metric]:
        s = self._settings
        lag = group_lag(s.kafka_connection(), s.kafka_topic, s.kafka_group_id, timeout_s=SOURCE_TIMEOUT_S)
        pending = group_lag(s.kafka_connection(), s.kafka_dlq_topic, replay_group(s.kafka_group_id),
                            timeout_s=SOURCE_TIMEOUT_S)
        return [
            _gauge("ingest_lag_events", "Events of KAFKA_TOPIC the consumer group has not committed (not stored yet)",
                   value=float(lag)),
            _gauge("dead_letters_pending", "Dead letters not replayed yet", value=float(pending)),
        ]
