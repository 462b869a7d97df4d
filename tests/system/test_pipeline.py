"""End to end through real processes: Tansu -> bridge -> Redis -> Celery worker -> PostgreSQL."""

from __future__ import annotations

import signal

import psycopg2
import pytest
from confluent_kafka import Producer

from tests.support.helpers import AGGREGATOR, count_events, log_text, start_worker, wait_for
from worker.ops.demo import demo_events

pytestmark = pytest.mark.e2e


def produce(bootstrap: str, topic: str, payloads: list[bytes], partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for payload in payloads:
        if partition is None:
            producer.produce(topic, payload)
        else:
            producer.produce(topic, payload, partition=partition)
    assert producer.flush(30) == 0


def test_every_event_stored_exactly_once_also_when_produced_twice(env: dict[str, str], spawn) -> None:
    events = list(demo_events(3000, 120, seed=1))
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], events)
    start_worker(spawn, env)
    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 3000, 90, "3000 events stored")

    # The same events again, then one sentinel per partition: the single worker (-c 1,
    # prefetch 1) runs batches in order, so once both sentinels are in, so is everything.
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], events)
    sentinels = list(demo_events(2, 1, seed=99))
    for partition, payload in enumerate(sentinels):
        produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], [payload], partition=partition)
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) >= 3002, 90, "sentinels stored")
    assert count_events(env["POSTGRES_DSN"]) == 3002
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(30) == 0, log_text(bridge)[-2000:]


def test_worker_killed_mid_batch_loses_nothing(env: dict[str, str], spawn) -> None:
    # Redelivered 3 s after the kill; the write waits on the lock (no lock timeout) until then,
    # and the batch's time limit stays below the visibility timeout, as the settings require.
    env = {**env, "VISIBILITY_TIMEOUT_S": "3", "TASK_TIME_LIMIT_INGEST_S": "2.5", "PG_LOCK_TIMEOUT_S": "0"}
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], list(demo_events(500, 30, seed=2)))
    # Hold the table so the worker's write blocks inside the batch.
    locker = psycopg2.connect(env["POSTGRES_DSN"])
    with locker.cursor() as cur:
        cur.execute("LOCK TABLE discussion_event IN ACCESS EXCLUSIVE MODE")
    worker = start_worker(spawn, env)
    spawn([*AGGREGATOR, "bridge"], env, "bridge")

    def worker_blocked() -> bool:
        with psycopg2.connect(env["POSTGRES_DSN"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'aggregator-store' "
                        "AND wait_event_type = 'Lock'")
            return cur.fetchone()[0] > 0

    wait_for(worker_blocked, 60, "worker blocked inside a batch")
    import os

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    locker.rollback()
    locker.close()
    start_worker(spawn, env)
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 500, 90, "500 events after the restart")
