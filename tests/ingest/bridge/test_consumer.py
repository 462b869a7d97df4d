"""The bridge against a real broker (Tansu) and Redis: backpressure, SIGTERM, dead letters."""

from __future__ import annotations

import json
import signal

import pytest
import redis
from confluent_kafka import Producer

from tests.support.helpers import (
    AGGREGATOR,
    committed_total,
    count_events,
    log_text,
    queued_points,
    start_worker,
    wait_for,
)
from worker.ingest.deadletter import DeadLetterReader
from worker.ops.demo import demo_events

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, payloads: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for payload in payloads:
        producer.produce(topic, payload)
    assert producer.flush(30) == 0


FIXED_BATCHES = {"BRIDGE_MIN_BATCH": "10", "BRIDGE_MAX_BATCH": "10", "BRIDGE_QUEUE_HIGH_WATERMARK": "2",
                 "BRIDGE_QUEUE_LOW_WATERMARK": "0", "BRIDGE_DEPTH_CHECK_INTERVAL_S": "0.2"}


def test_backpressure_pauses_and_resumes(env: dict[str, str], spawn) -> None:
    env = {**env, **FIXED_BATCHES}
    # More than one consume() call takes (500): part of the backlog must stay in Kafka.
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], list(demo_events(1500, 10, seed=3)))
    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")
    wait_for(lambda: "msg=paused" in log_text(bridge), 60, "bridge paused")
    r = redis.Redis.from_url(env["REDIS_URL"])
    assert r.llen("ingest") == 2  # exactly the high watermark: nothing more was published
    assert queued_points(env["REDIS_URL"]) == 20
    assert committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"], env["KAFKA_TOPIC"]) <= 20
    start_worker(spawn, env)
    wait_for(lambda: "msg=resumed" in log_text(bridge), 60, "bridge resumed")
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 1500, 90, "all 1500 stored after resuming")
    wait_for(lambda: committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"],
                                     env["KAFKA_TOPIC"]) == 1500, 30, "offsets committed")


def test_sigterm_while_redis_refuses_keeps_its_deadline_and_commits_only_what_is_stored(
        env: dict[str, str], spawn) -> None:
    """Two batches are in Redis (no worker yet), the rest held back by backpressure; Redis
    then refuses every write and the bridge gets SIGTERM: it exits within its deadline, and
    commits nothing, because nothing is in the store. A worker started later stores the two
    queued batches; a new bridge reads everything else again from Kafka: all 200 arrive once."""
    import time

    deadline_s = 5.0
    env = {**env, **FIXED_BATCHES, "BRIDGE_SHUTDOWN_DEADLINE_S": str(deadline_s)}
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], list(demo_events(200, 10, seed=4)))
    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")
    wait_for(lambda: "msg=paused" in log_text(bridge), 60, "bridge paused with batches held")
    r = redis.Redis.from_url(env["REDIS_URL"])
    r.execute_command("CLIENT", "PAUSE", "60000", "WRITE")  # the broker stops taking publishes
    try:
        started = time.monotonic()
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(60) == 0, log_text(bridge)[-3000:]
        took = time.monotonic() - started
    finally:
        r.execute_command("CLIENT", "UNPAUSE")
    assert took < deadline_s + 3, f"SIGTERM took {took:.1f} s against a {deadline_s} s deadline"
    assert queued_points(env["REDIS_URL"]) == 20
    assert committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"], env["KAFKA_TOPIC"]) == 0
    start_worker(spawn, env)
    spawn([*AGGREGATOR, "bridge"], env, "bridge-2")
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 200, 90, "all 200 stored")
    wait_for(lambda: committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"],
                                     env["KAFKA_TOPIC"]) == 200, 30, "all committed once stored")


def test_invalid_events_are_dead_lettered_and_replayed(env: dict[str, str], spawn) -> None:
    good = list(demo_events(50, 5, seed=5))
    broken = json.loads(good[0])
    del broken["subj"]["processed"]["score"]
    bad = [b"{not json", json.dumps(broken).encode()]
    produce(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_TOPIC"], [*good, *bad])
    start_worker(spawn, env)
    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 50, 60, "valid events stored")
    wait_for(lambda: committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"],
                                     env["KAFKA_TOPIC"]) == 52, 30, "invalid events committed past")
    bridge.send_signal(signal.SIGTERM)
    bridge.wait(30)
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    letters = sorted((letter.reason for _, _, letter in reader.records(reader.cursor())), key=len)
    reader.close()
    assert len(letters) == 2
    assert any("not valid JSON" in reason for reason in letters)
    assert any("missing required field `score`" in reason for reason in letters)

    import subprocess

    listing = subprocess.run([*AGGREGATOR, "dlq", "list"], env={**__import__("os").environ, **env},
                             capture_output=True, text=True, check=True)
    assert "2 dead letter(s) pending replay" in listing.stderr
    assert "missing required field `score`" in listing.stdout
    replayed = subprocess.run([*AGGREGATOR, "dlq", "replay"], env={**__import__("os").environ, **env},
                              capture_output=True, text=True, check=True)
    report = json.loads(replayed.stdout.strip().splitlines()[-1])
    assert report["read"] == 2 and report["still_invalid"] == 2  # still broken: dead-lettered again
    listing = subprocess.run([*AGGREGATOR, "dlq", "list"], env={**__import__("os").environ, **env},
                             capture_output=True, text=True, check=True)
    assert "2 dead letter(s) pending replay" in listing.stderr and "attempt=2" in listing.stdout


def metric(port: int, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(f"aggregator_bridge_{name} ") or line.startswith(f"aggregator_bridge_{name}_total "):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not exposed")


def test_pause_survives_a_rebalance_and_nothing_is_lost(env: dict[str, str], spawn) -> None:
    """A second bridge joins while the first is paused: the partitions each gets stay paused
    (librdkafka does not pause newly assigned partitions, and a pause before the assignment
    is lost), nothing more is consumed or published past the watermark, and once a worker
    drains the queue every event is stored once."""
    from tests.support.devstack.services import free_port

    env = {**env, **FIXED_BATCHES, "BRIDGE_POLL_TIMEOUT_S": "0.05"}
    # Keyed events spread over both partitions (unkeyed ones may all land in one).
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 5})
    for i, payload in enumerate(demo_events(3000, 10, seed=6)):
        producer.produce(env["KAFKA_TOPIC"], payload, key=str(i).encode())
    assert producer.flush(30) == 0
    ports = [free_port(), free_port()]
    first = spawn([*AGGREGATOR, "bridge"], {**env, "BRIDGE_METRICS_PORT": str(ports[0])}, "bridge-1")
    wait_for(lambda: "msg=paused" in log_text(first), 60, "first bridge paused")
    second = spawn([*AGGREGATOR, "bridge"], {**env, "BRIDGE_METRICS_PORT": str(ports[1])}, "bridge-2")
    wait_for(lambda: "partitions assigned" in log_text(second), 60, "second bridge joined")
    wait_for(lambda: log_text(first).count("partitions assigned") >= 2, 60, "first bridge reassigned")
    # Let both loops poll many times while paused: whatever they consume now is a leak.
    polls = [metric(port, "polls") for port in ports]
    wait_for(lambda: all(metric(p, "polls") >= n + 100 for p, n in zip(ports, polls, strict=True)), 60,
             "100 more polls each")
    consumed = [metric(port, "consumed") for port in ports]
    assert sum(consumed) <= 1000, consumed  # at most one consume() call (500) each, not the backlog
    r = redis.Redis.from_url(env["REDIS_URL"])
    assert r.llen("ingest") == 2  # neither bridge publishes into the deep queue
    start_worker(spawn, env)
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 3000, 120, "all 3000 stored")
    for bridge in (first, second):
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(30) == 0
    assert count_events(env["POSTGRES_DSN"]) == 3000
