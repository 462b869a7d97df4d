"""`aggregator exporter`: the product's state read at scrape time from real PostgreSQL,
Redis and Kafka, and a source that is down reported as such, never a failed scrape."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from datetime import timedelta

import psycopg2
import pytest
import redis
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR, wait_for
from worker.celeryapp.beat import BEAT_LOCK_KEY
from worker.config.settings import Settings
from worker.ingest.bridge.guard_state import GuardStop, RedisGuardRecords
from worker.ops.exporter import StateCollector

pytestmark = pytest.mark.integration


def scrape(settings: Settings) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(settings))
    text = generate_latest(registry).decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def seed(dsn: str) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("""INSERT INTO trend_run (run_id, duration, calculated_at, status, started_at, planned_at,
                                              finalize_at, finished_at, refreshed_at, rows_written)
                       VALUES ('c1', 'currently', now(), 'finalized', timestamp '2026-12-01 10:00:00+00',
                               timestamp '2026-12-01 10:00:02+00', timestamp '2026-12-01 10:00:07+00',
                               timestamp '2026-12-01 10:00:08+00', timestamp '2026-12-01 10:00:08.5+00', 450),
                              ('c0', 'currently', now(), 'failed', now(), NULL, NULL, now(), NULL, NULL)""")
        cur.execute("INSERT INTO morning_post (day, status, text, posted_at) VALUES "
                    "('2026-12-01', 'posted', 'x', timestamp '2026-12-01 05:59:30+00')")
    conn.close()


def test_state_of_runs_queues_lag_and_post(pg_dsn: str, redis_url: str, kafka, topics: dict[str, str]) -> None:
    seed(pg_dsn)
    redis.Redis.from_url(redis_url).rpush("trends", b"{}", b"{}")
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
    for i in range(5):  # one record per request: Tansu counts its watermark per batch
        producer.produce(topics["topic"], b"{}", partition=i % 2)
        producer.flush(10)
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, kafka_bootstrap_servers=kafka.bootstrap,
                        kafka_topic=topics["topic"], kafka_dlq_topic=topics["dlq"], kafka_group_id=topics["group"])
    got = scrape(settings)
    now = time.time()
    d = (("duration", "currently"),)
    assert got[("aggregator_trend_age_seconds", d)] == pytest.approx(now - 1796119208.0, abs=5)
    assert got[("aggregator_trend_last_run_rows", d)] == 450
    phases = {phase: got[("aggregator_trend_last_run_phase_seconds", (("duration", "currently"), ("phase", phase)))]
              for phase in ("plan", "chunks", "finalize", "refresh")}
    assert phases == {"plan": 2.0, "chunks": 5.0, "finalize": 1.0, "refresh": 0.5}
    assert got[("aggregator_trend_stale_after_seconds", d)] == timedelta(minutes=10, seconds=15).total_seconds()
    # Never finalized: its age counts from the product's first run (c0 or c1, whichever began first),
    # so a duration that never finalizes still ages into TrendStale.
    first_run = min(now, 1796119200.0)
    assert got[("aggregator_trend_age_seconds", (("duration", "year"),))] == pytest.approx(now - first_run, abs=5)
    assert got[("aggregator_trend_runs_24h", (("duration", "currently"), ("status", "failed")))] == 1
    assert got[("aggregator_queue_depth", (("queue", "trends"),))] == 2
    assert got[("aggregator_queue_depth", (("queue", "ingest"),))] == 0
    assert got[("aggregator_ingest_lag_events", ())] == 5
    assert got[("aggregator_dead_letters_pending", ())] == 0
    assert got[("aggregator_morning_post_age_seconds", ())] == pytest.approx(now - 1796104770.0, abs=5)
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:  # only dry runs so far: nothing posted
        cur.execute("DELETE FROM morning_post")
    conn.close()
    never = scrape(settings)[("aggregator_morning_post_age_seconds", ())]
    assert never == pytest.approx(time.time() - first_run, abs=5)
    assert {source: got[("aggregator_exporter_source_up", (("source", source),))]
            for source in ("postgres", "redis", "kafka")} == {"postgres": 1, "redis": 1, "kafka": 1}
    assert got[("aggregator_dead_letter_guard_stopped", ())] == 0
    # The guard's stop is a record in Redis: the exporter shows it without any bridge running.
    records = RedisGuardRecords(redis.Redis.from_url(redis_url), topics["group"], topics["topic"])
    records.write(GuardStop("62 of the last 100 events invalid", "x", "2026-12-01T10:00:00+00:00", "h:1"))
    assert scrape(settings)[("aggregator_dead_letter_guard_stopped", ())] == 1
    records.clear()
    assert scrape(settings)[("aggregator_dead_letter_guard_stopped", ())] == 0
    # The active beat's lock (celery-redbeat's key): held -> 1, expired or released -> 0.
    assert got[("aggregator_beat_lock_held", ())] == 0
    redis.Redis.from_url(redis_url).set(BEAT_LOCK_KEY, b"token", px=60_000)
    assert scrape(settings)[("aggregator_beat_lock_held", ())] == 1
    redis.Redis.from_url(redis_url).delete(BEAT_LOCK_KEY)
    # How full Redis is, for the RedisNearlyFull alert (monitoring/prometheus/alerts.yml).
    assert got[("aggregator_redis_memory_used_bytes", ())] > 0
    assert got[("aggregator_redis_memory_max_bytes", ())] == 0  # the tests' Redis has no limit


def test_a_source_that_is_down_is_a_zero_not_a_failed_scrape(redis_url: str) -> None:
    closed = free_port()
    settings = Settings(postgres_dsn=f"postgresql://a:b@127.0.0.1:{closed}/x", redis_url=redis_url,
                        kafka_bootstrap_servers=f"127.0.0.1:{closed}")
    got = scrape(settings)
    assert got[("aggregator_exporter_source_up", (("source", "postgres"),))] == 0
    assert got[("aggregator_exporter_source_up", (("source", "kafka"),))] == 0
    assert got[("aggregator_exporter_source_up", (("source", "redis"),))] == 1
    assert got[("aggregator_queue_depth", (("queue", "ingest"),))] == 0


def test_the_command_serves_until_sigterm(pg_dsn: str, redis_url: str, tmp_path) -> None:
    port = free_port()
    proc = subprocess.Popen([*AGGREGATOR, "exporter", "--port", str(port)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "POSTGRES_DSN": pg_dsn, "REDIS_URL": redis_url})
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == f"exporter on :{port}/metrics"

        def answered() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
                return b'aggregator_exporter_source_up{source="postgres"} 1.0' in response.read()

        wait_for(answered, 30, "the exporter's /metrics")
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
