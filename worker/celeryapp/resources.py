"""The composition root of a worker process: every resource, built from one ``Settings``.

A database connection or a Kafka producer created before the prefork pool forks would be
shared by the children and corrupted, so nothing is built at import: a :class:`Resources`
builds each resource on first use, inside the child, and a failed connection is simply
reopened on the next task. The tasks reach them through :func:`for_process`, which reads
the settings (the one place a worker does) and builds the process's resources from them;
library code is handed what it needs and never reads settings itself.
"""

from __future__ import annotations

import contextlib
from functools import cached_property

import redis
from celery import Celery

from worker.config.settings import Settings, get_settings
from worker.core.cron import min_period_s
from worker.ingest.acks import AckReader
from worker.ingest.bridge.consumer import Bridge
from worker.ingest.bridge.depth import QueueDepthProbe
from worker.ingest.bridge.guard_state import RedisGuardRecords
from worker.ingest.deadletter import DeadLetterWriter, ensure_topic
from worker.ingest.publisher import PUBLISH_TIMEOUT_S, IngestPublisher, bounded_transport_options
from worker.ingest.write_limit import WriteLimit, bucket_key
from worker.maintenance.slots import SlotClaims
from worker.store import EventStore, open_store
from worker.trends.lease import Leases
from worker.trends.lifecycle import RunSteps, TrendRuns
from worker.trends.state import PostgresRunState


def redis_client(settings: Settings, timeout_s: float | None = None) -> redis.Redis:
    """A Redis client on ``REDIS_URL`` whose calls give up after ``timeout_s`` (default
    ``CONNECT_TIMEOUT_S``)."""
    timeout = settings.connect_timeout_s if timeout_s is None else timeout_s
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=timeout,
                                socket_connect_timeout=timeout)


class Resources:
    """What one worker process uses, built lazily from ``settings`` and closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def event_store(self) -> EventStore:
        return open_store(self.settings)

    @cached_property
    def dead_letters(self) -> DeadLetterWriter:
        return DeadLetterWriter(self.settings.kafka_bootstrap_servers, self.settings.kafka_dlq_topic,
                                connect_timeout_s=self.settings.connect_timeout_s)

    @cached_property
    def ack_client(self) -> redis.Redis:
        """Redis for the confirmations to the bridge (short timeouts: a confirmation that does
        not go through only costs a duplicate write, it must never hold a worker slot)."""
        return redis_client(self.settings, min(self.settings.connect_timeout_s, 2.0))

    @cached_property
    def write_limit(self) -> WriteLimit:
        """The ingest workers' shared write limit (short timeouts: a Redis that does not
        answer must not hold a batch; the limiter then falls back to a bucket of its own)."""
        settings = self.settings
        return WriteLimit(redis_client(settings, min(settings.connect_timeout_s, 2.0)),
                          bucket_key(settings.ingest_queue), settings.ingest_rate_per_s(), settings.ingest_burst())

    @cached_property
    def leases(self) -> Leases:
        return Leases(redis_client(self.settings), self.settings.trend_lock_ttl_s)

    @cached_property
    def maintenance_slots(self) -> SlotClaims:
        """Claims of the maintenance task's cron slots; kept two periods."""
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
    """This process's resources, built from its settings on first use.

    Rebuilt when the settings object changes (tests switch environments by clearing
    ``get_settings``'s cache), so a resource never outlives the settings it came from.
    """
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


def build_bridge(settings: Settings, app: Celery) -> Bridge:
    """The Kafka -> Celery bridge with every collaborator it needs, from ``settings``."""
    # Fail at start, with a message, when Kafka does not answer (the loop would only wait).
    ensure_topic(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic, settings.kafka_dlq_partitions,
                 timeout_s=settings.connect_timeout_s)
    # Every Redis call of the bridge fails fast: a blocked publish keeps its batch (and the
    # SIGTERM deadline) instead of hanging the loop. Set before the app's first connection.
    timeout = min(settings.connect_timeout_s, PUBLISH_TIMEOUT_S)
    app.conf.broker_transport_options = bounded_transport_options(dict(app.conf.broker_transport_options), timeout)
    client = redis_client(settings, timeout)
    probe = QueueDepthProbe(client, settings.ingest_queue, interval_s=settings.bridge_depth_check_interval_s)
    return Bridge(settings, IngestPublisher(app, settings.ingest_queue, timeout_s=timeout), probe,
                  DeadLetterWriter(settings.kafka_bootstrap_servers, settings.kafka_dlq_topic,
                                   timeout_s=min(10.0, settings.bridge_shutdown_deadline_s / 2),
                                   connect_timeout_s=settings.connect_timeout_s),
                  AckReader(client, settings.kafka_group_id, settings.kafka_topic),
                  guard_records=RedisGuardRecords(client, settings.kafka_group_id, settings.kafka_topic))
