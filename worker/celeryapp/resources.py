"""The composition root of a worker process: every resource, built from one ``Settings``.

Nothing is built at import: a connection made before the prefork pool forks would be
shared by the children. :func:`for_process` builds each resource on first use, inside the
child; library code is handed what it needs and never reads settings itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from functools import cached_property
from typing import Any

import redis
from celery import Celery
from confluent_kafka import Consumer
from pydantic import SecretStr

from worker.config.settings import Settings, get_settings
from worker.core.cron import min_period_s
from worker.ingest.acks import AckReader
from worker.ingest.bridge.ceiling import Batcher, CeilingConfig, CeilingPolicy
from worker.ingest.bridge.commit import AckSource, Commit, log_refused_commit
from worker.ingest.bridge.consumer import Bridge
from worker.ingest.bridge.depth import QueueDepthProbe
from worker.ingest.bridge.dlq_guard import DlqGuard
from worker.ingest.bridge.flow import Backpressure
from worker.ingest.bridge.guard_state import GuardRecords, GuardSync, RedisGuardRecords
from worker.ingest.bridge.offsets import OffsetTracker
from worker.ingest.bridge.pause import Pause
from worker.ingest.bridge.publish import Publish
from worker.ingest.bridge.state import BridgeStats, Partitions
from worker.ingest.deadletter import DeadLetterWriter, ensure_topic
from worker.ingest.kafka_config import client_config
from worker.ingest.publisher import PUBLISH_TIMEOUT_S, IngestPublisher, bounded_transport_options
from worker.ingest.write_limit import WriteLimit, bucket_key
from worker.maintenance.slots import SlotClaims
from worker.store import EventStore, open_store
from worker.trends.lease import Leases
from worker.trends.lifecycle import RunSteps, TrendRuns
from worker.trends.state import PostgresRunState


def redis_client(settings: Settings, timeout_s: float | None = None, url: SecretStr | None = None) -> redis.Redis:
    """Every redis-py client of the product: on ``url`` (default ``REDIS_URL``) with REDIS_PASSWORD
    and TLS as set, its calls bounded by ``timeout_s`` (default ``CONNECT_TIMEOUT_S``)."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    return redis.Redis.from_url(settings.redis_address(url), socket_timeout=timeout, socket_connect_timeout=timeout,
                                **settings.redis_tls(url))


class Resources:
    """What one worker process uses, built lazily from ``settings`` and closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def event_store(self) -> EventStore:
        return open_store(self.settings)

    @cached_property
    def dead_letters(self) -> DeadLetterWriter:
        return DeadLetterWriter(self.settings.kafka_connection(), self.settings.kafka_dlq_topic,
                                connect_timeout_s=self.settings.connect_timeout_s)

    # Short timeouts for the confirmations and the write limit: both have a fallback (acks.py, write_limit.py).
    @cached_property
    def ack_client(self) -> redis.Redis:
        return redis_client(self.settings, min(self.settings.connect_timeout_s, 2.0))

    @cached_property
    def write_limit(self) -> WriteLimit:
        settings = self.settings
        return WriteLimit(redis_client(settings, min(settings.connect_timeout_s, 2.0)),
                          bucket_key(settings.ingest_queue), settings.ingest_rate_per_s(), settings.ingest_burst())

    @cached_property
    def leases(self) -> Leases:
        return Leases(redis_client(self.settings), self.settings.trend_lock_ttl_s)

    @cached_property
    def maintenance_slots(self) -> SlotClaims:
        period = min_period_s(self.settings.maintenance_schedule)
        return SlotClaims(redis_client(self.settings), 2 * period)

    @cached_property
    def run_state(self) -> PostgresRunState:
        return PostgresRunState.from_settings(self.settings)

    @cached_property
    def trend_runs(self) -> TrendRuns:
        steps = RunSteps(self.event_store, self.run_state, chunk_size=self.settings.trend_chunk_size)
        return TrendRuns(steps, self.leases)

    def close(self) -> None:
        """Close what was built (best effort: closing a broken resource must not fail)."""
        for name in ("event_store", "dead_letters", "ack_client", "write_limit", "leases", "maintenance_slots",
                     "run_state"):
            if name in self.__dict__:
                with contextlib.suppress(Exception):
                    self.__dict__.pop(name).close()
        self.__dict__.pop("trend_runs", None)


_process: Resources | None = None


def for_process() -> Resources:
    """This process's resources, built again when the settings object changes: none outlives its settings."""
    global _process
    settings = get_settings()
    if _process is None or _process.settings is not settings:
        if _process is not None:
            _process.close()
        _process = Resources(settings)
    return _process


def reset() -> None:
    """Close and forget this process's resources (tests, and a worker's shutdown)."""
    global _process
    if _process is not None:
        _process.close()
    _process = None


def consumer_config(settings: Settings) -> dict[str, Any]:
    return client_config(settings.kafka_connection(), timeout_s=settings.connect_timeout_s, extra={
        "group.id": settings.kafka_group_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "on_commit": log_refused_commit,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Every blocking step of the bridge's loop is bounded well under this.
        "max.poll.interval.ms": 300_000,
        "session.timeout.ms": settings.kafka_session_timeout_ms,
        # Only the partitions that change owner move (worker.ingest.bridge.consumer); a group
        # cannot mix it with the eager strategies (docs/operating.md, "Several bridges").
        "partition.assignment.strategy": "cooperative-sticky",
        "queued.max.messages.kbytes": settings.kafka_prefetch_kbytes,
        "enable.partition.eof": False,
    })


def compose_bridge(settings: Settings, consumer: Consumer, publisher: IngestPublisher, probe: QueueDepthProbe,
                   dead_letters: DeadLetterWriter, acks: AckSource, guard_records: GuardRecords | None, *,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> Bridge:
    """The bridge's steps around its clients, each given the settings it needs."""
    s = settings
    partitions = Partitions(s.kafka_topic)
    stats = BridgeStats()
    tracker = OffsetTracker(s.bridge_confirm_timeout_s)
    backpressure = Backpressure(s.bridge_queue_high_watermark, s.bridge_queue_low_watermark, s.bridge_max_in_flight,
                                s.bridge_redis_memory_high_watermark)
    guard = GuardSync(DlqGuard(s.bridge_max_dlq_ratio, s.bridge_dlq_min_events), guard_records, stats)
    ceiling = CeilingConfig(target_interval_s=s.bridge_target_interval_s, half_life_s=s.bridge_rate_half_life_s,
                            min_batch=s.bridge_min_batch, max_batch=s.bridge_max_batch,
                            max_age_s=s.bridge_max_batch_age_s, max_bytes=s.bridge_max_batch_bytes,
                            hysteresis=s.bridge_hysteresis, idle_s=s.bridge_idle_flush_s)
    return Bridge(consumer, partitions, Batcher(CeilingPolicy(ceiling)),
                  Publish(publisher, dead_letters, probe, tracker, backpressure, partitions, stats,
                          group=s.kafka_group_id, clock=clock),
                  Commit(consumer, tracker, acks, partitions, stats),
                  Pause(consumer, partitions, probe, tracker, backpressure, guard, stats), guard, stats,
                  s.kafka_group_id, s.bridge_poll_timeout_s, s.bridge_revoke_deadline_s,
                  s.bridge_shutdown_deadline_s, clock, sleep)


def ensure_dead_letter_topic(settings: Settings) -> None:
    """The dead-letter topic as the settings want it, its retention set on an existing topic too
    (the broker's default, 7 days on Kafka, would drop letters nobody replayed in time)."""
    days = settings.kafka_dlq_retention_days
    ensure_topic(settings.kafka_connection(), settings.kafka_dlq_topic, settings.kafka_dlq_partitions,
                 replication=settings.kafka_dlq_replication_factor,
                 config={"retention.ms": str(days * 86_400_000 if days else -1)}, timeout_s=settings.connect_timeout_s)


def build_bridge(settings: Settings, app: Celery) -> Bridge:
    """The Kafka -> Celery bridge with every collaborator it needs, from ``settings``."""
    # Fail at start, with a message, when Kafka does not answer (the loop would only wait).
    ensure_dead_letter_topic(settings)
    # Every Redis call of the bridge fails fast (PUBLISH_TIMEOUT_S says why); set before the app's first connection.
    timeout = min(settings.connect_timeout_s, PUBLISH_TIMEOUT_S)
    app.conf.broker_transport_options = bounded_transport_options(dict(app.conf.broker_transport_options), timeout)
    client = redis_client(settings, timeout)
    probe = QueueDepthProbe(client, settings.ingest_queue, interval_s=settings.bridge_depth_check_interval_s)
    return compose_bridge(settings, Consumer(consumer_config(settings)),
                          IngestPublisher(app, settings.ingest_queue, timeout_s=timeout), probe,
                          DeadLetterWriter(settings.kafka_connection(), settings.kafka_dlq_topic,
                                           timeout_s=min(10.0, settings.bridge_shutdown_deadline_s / 2),
                                           connect_timeout_s=settings.connect_timeout_s),
                          AckReader(client, settings.kafka_group_id, settings.kafka_topic),
                          RedisGuardRecords(client, settings.kafka_group_id, settings.kafka_topic))
