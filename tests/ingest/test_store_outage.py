"""The store goes down under a real worker: retries, recovery, dead letters past the budget, replay."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from confluent_kafka import Producer

from tests.support.devstack.services import PostgresServer
from tests.support.helpers import AGGREGATOR, count_events, log_text, start_worker, wait_for
from worker.ingest.deadletter import DeadLetterReader
from worker.ops.demo import demo_events

pytestmark = pytest.mark.e2e


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for payload in payloads:
        producer.produce(topic, payload)
    assert producer.flush(30) == 0


def dead_lettered_events(env: dict[str, str]) -> int:
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    try:
        return sum(len(letter.points or []) for _, _, letter in reader.records(reader.cursor()) if letter)
    finally:
        reader.close()


def test_outage_retries_then_dead_letters_then_replays(env: dict[str, str], spawn, own_pg: PostgresServer) -> None:
    env = {**env, "POSTGRES_DSN": own_pg.dsn}
    worker = start_worker(spawn, env)
    spawn([*AGGREGATOR, "bridge"], env, "bridge")

    # 1. Store down for a while: batches retry, nothing is lost once it is back.
    own_pg.stop()
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], list(demo_events(300, 20, seed=11)))
    wait_for(lambda: log_text(worker).count("store unavailable, retrying") >= 3, 60, "retries while down")
    own_pg.start()
    wait_for(lambda: count_events(own_pg.dsn) == 300, 60, "300 events after the store came back")
    os.killpg(worker.pid, 15)
    worker.wait(30)

    # 2. Down past the outage tolerance: batches land in the dead letters...
    env["INGEST_OUTAGE_TOLERANCE_S"] = "2"
    worker = start_worker(spawn, env)
    own_pg.stop()
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], list(demo_events(200, 20, seed=12)))
    wait_for(lambda: dead_lettered_events(env) == 200, 60, "200 events dead-lettered")
    assert "batch dead-lettered" in log_text(worker)

    # 3. ... and a replay once the store is back stores them all.
    own_pg.start()
    replay = subprocess.run([*AGGREGATOR, "dlq", "replay"], env={**os.environ, **env}, capture_output=True,
                            text=True, timeout=120)
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert re.search(r"^letters: (\d+)/\1 \(100%\)", replay.stderr, re.M), replay.stderr[-2000:]
    wait_for(lambda: count_events(own_pg.dsn) == 500, 60, "all 500 events after the replay")
    assert dead_lettered_events(env) == 0  # the replay cursor moved past them
