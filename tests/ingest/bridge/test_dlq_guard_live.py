"""The dead-letter guard on a real broker (Tansu), Redis, a worker and PostgreSQL: a stream
that turns fully invalid stops the bridge, Kafka keeps what is beyond the trip, health says
why; a restart with the same settings stays stopped, `aggregator bridge resume` and a
restart with BRIDGE_MAX_DLQ_RATIO=1.0 resume it, and in the end every event is stored or
dead-lettered exactly once."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR, committed_total, count_events, log_text, start_worker, wait_for
from worker.ingest.deadletter import DeadLetterReader
from worker.ops.demo import demo_events

pytestmark = pytest.mark.integration

VALID, INVALID, WINDOW = 200, 300, 50
GUARD = {"BRIDGE_MAX_DLQ_RATIO": "0.5", "BRIDGE_DLQ_MIN_EVENTS": str(WINDOW), "BRIDGE_MIN_BATCH": "10",
         "BRIDGE_MAX_BATCH": "50", "BRIDGE_MAX_BATCH_AGE_S": "1"}


def metric(port: int, name: str) -> float:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.split(" ")[0] in (f"aggregator_bridge_{name}", f"aggregator_bridge_{name}_total"):
            return float(line.split()[-1])
    raise AssertionError(f"metric {name} not exposed")


def aggregator(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([*AGGREGATOR, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=120)


def letters(env: dict[str, str]) -> list[Any]:
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    try:
        return [letter for _, _, letter in reader.records({})]
    finally:
        reader.close()


def stays_stopped(port: int, committed: Callable[[], int], at: int) -> None:
    """Let the paused loop poll many times: whatever it takes or commits now is a leak."""
    polls = metric(port, "polls")
    wait_for(lambda: metric(port, "polls") >= polls + 40, 60, "40 more polls while stopped")
    assert committed() == at
    assert metric(port, "dlq_guard_tripped") == 1 and metric(port, "paused") == 1


def test_a_stream_turning_invalid_stops_the_bridges_until_an_operator_resumes(env: dict[str, str], spawn) -> None:
    env = {**env, **GUARD}
    valid = list(demo_events(VALID, 10, seed=11))
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 5})
    for payload in [*valid, *(b'{"not": "an event %d"}' % i for i in range(INVALID))]:
        producer.produce(env["KAFKA_TOPIC"], payload, partition=0)  # one partition: a known order
    assert producer.flush(30) == 0

    def committed() -> int:
        return committed_total(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_GROUP_ID"], env["KAFKA_TOPIC"])

    start_worker(spawn, env)
    port = free_port()
    bridge = spawn([*AGGREGATOR, "bridge"], {**env, "BRIDGE_METRICS_PORT": str(port)}, "bridge-1")
    wait_for(lambda: "dead-letter guard tripped" in log_text(bridge), 90, "the guard tripped")
    # The window holds the last 24 valid events and 26 invalid ones (26/50 > 0.5): the 26th is
    # the last dead letter, and everything after it stays in Kafka.
    tripped_at = VALID + WINDOW // 2 + 1
    wait_for(lambda: committed() == tripped_at, 60, f"committed up to the trip ({tripped_at})")
    stays_stopped(port, committed, tripped_at)
    assert count_events(env["POSTGRES_DSN"]) == VALID, "the valid events held when it tripped are stored"
    assert len(letters(env)) == WINDOW // 2 + 1
    trip_lines = [line for line in log_text(bridge).splitlines() if "dead-letter guard tripped" in line]
    assert len(trip_lines) == 1 and "invalid=26" in trip_lines[0] and "window=50" in trip_lines[0]
    health = aggregator(env, "health", "bridge")
    assert health.returncode == 69, health.stdout + health.stderr  # EX_UNAVAILABLE: a check failed
    assert "FAIL dlq-guard" in health.stdout and "26 of the last 50 events were dead-lettered" in health.stdout

    # A restart with the same settings does not lift the stop: nothing more is dead-lettered.
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(60) == 0
    port = free_port()
    bridge = spawn([*AGGREGATOR, "bridge"], {**env, "BRIDGE_METRICS_PORT": str(port)}, "bridge-2")
    wait_for(lambda: "partitions assigned" in log_text(bridge), 90, "the restarted bridge joined")
    assert "dead-letter guard stop in force" in log_text(bridge)
    stays_stopped(port, committed, tripped_at)
    assert metric(port, "consumed") == 0

    # The operator resumes: the stream is still invalid, so a fresh window of 50 invalid
    # events trips it again, and no more.
    resumed = aggregator(env, "bridge", "resume")
    assert resumed.returncode == 0 and "lifted the dead-letter guard stop" in resumed.stdout, resumed.stderr
    wait_for(lambda: committed() == tripped_at + WINDOW, 60, "one more window, then stopped again")
    stays_stopped(port, committed, tripped_at + WINDOW)
    bridge.send_signal(signal.SIGTERM)
    assert bridge.wait(60) == 0

    # A restart with the guard off takes the rest.
    bridge = spawn([*AGGREGATOR, "bridge"], {**env, "BRIDGE_MAX_DLQ_RATIO": "1.0"}, "bridge-3")
    wait_for(lambda: committed() == VALID + INVALID, 90, "every message committed past")
    assert "stop lifted: this bridge runs with other settings" in log_text(bridge)
    assert aggregator(env, "health", "bridge").returncode == 0
    letters_written = letters(env)
    origins = [letter.origin for letter in letters_written]
    print(f"GUARD produced={VALID + INVALID} stored={count_events(env['POSTGRES_DSN'])} "
          f"dead_lettered={len(origins)} distinct={len(set(origins))}")
    assert len(origins) == len(set(origins)) == INVALID, "every invalid event dead-lettered exactly once"
    assert count_events(env["POSTGRES_DSN"]) == VALID
