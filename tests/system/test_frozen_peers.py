"""A peer that stops answering without refusing (a paused VM, a network partition): each of
PostgreSQL, Redis and Kafka (Tansu) is frozen with SIGSTOP for 90 s in the middle of a
stream, then SIGCONT. Timeouts must carry the product through it: no process exits (beat
included), and once the peer answers again every event, and 500 produced after, is stored
once and every offset committed, by itself. The servers are the test's own, so freezing them disturbs no other test."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.devstack.services import KafkaBroker, PostgresServer, RedisServer
from tests.support.fault_harness import CELERY, Stage, wait
from worker.celeryapp.beat import BEAT_LOCK_KEY
from worker.ingest.deadletter import ensure_topic
from worker.ops.demo import demo_events

pytestmark = pytest.mark.faults

FREEZE_S = 90.0
RECOVERY_BOUND_S = 60.0


@pytest.fixture
def own_kafka() -> Iterator[KafkaBroker]:
    broker = KafkaBroker(Path(tempfile.mkdtemp(prefix="agg-fault-kafka-"))).start()
    yield broker
    broker.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer(Path(tempfile.mkdtemp(prefix="agg-fault-redis-"))).start()
    yield server
    server.stop()


def processes(peer: str, pg: PostgresServer, redis: RedisServer, kafka: KafkaBroker) -> list[int]:
    """The peer's processes, parent first: PostgreSQL's are the postmaster and its children
    (each backend calls setsid(), so there is no one process group to signal)."""
    if peer == "postgres":
        postmaster = int((pg.datadir / "postmaster.pid").read_text().split()[0])
        children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split()
        return [postmaster, *map(int, children)]
    proc = (redis if peer == "redis" else kafka).proc
    assert proc is not None
    return [proc.pid]


@pytest.mark.parametrize("peer", ["postgres", "redis", "kafka"])
def test_peer_frozen_for_90_s(peer: str, env: dict[str, str], own_pg: PostgresServer, own_redis: RedisServer,
                              own_kafka: KafkaBroker, tmp_path: Path) -> None:
    ensure_topic(own_kafka.bootstrap, env["KAFKA_TOPIC"], 2)
    ensure_topic(own_kafka.bootstrap, env["KAFKA_DLQ_TOPIC"], 1)
    stage = Stage({**env, "POSTGRES_DSN": own_pg.dsn, "REDIS_URL": own_redis.url,
                   "KAFKA_BOOTSTRAP_SERVERS": own_kafka.bootstrap}, tmp_path)
    try:
        stage.start_worker()
        stage.start_bridge()
        stage.supervisor.start("beat", [*CELERY, "beat", "-l", "info"], stage.env, tmp_path / "beat.log")
        stage.produce(list(demo_events(2000, 40, seed=51)))
        wait(lambda: stage.stored()[1] > 0, 60, "ingestion under way")
        stage.produce(list(demo_events(2000, 40, seed=52)))  # in flight when the peer freezes
        frozen = processes(peer, own_pg, own_redis, own_kafka)
        for pid in frozen:  # the parent first: it forks no new child meanwhile
            os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(FREEZE_S)  # the fault itself: a peer that answers nothing for this long
        finally:
            for pid in reversed(frozen):
                os.kill(pid, signal.SIGCONT)
        thawed = time.monotonic()
        stage.produce(list(demo_events(500, 40, seed=53)))  # taken only by a bridge consuming again
        wait(lambda: stage.all_stored() and stage.committed() == 4500, 180, "every event stored and committed")
        recovery = time.monotonic() - thawed
        ledger = stage.ledger(f"{peer} frozen (SIGSTOP) for {FREEZE_S:.0f} s", recovery)
        assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 4500)
        # Redis let beat's lock expire while frozen: beat takes it again instead of exiting.
        wait(lambda: bool(redis.Redis.from_url(own_redis.url).exists(BEAT_LOCK_KEY)), 60, "beat holds its lock")
        for child in stage.supervisor.children.values():
            assert child.alive and not child.exits, f"{child.name} exited {child.exits}; see {child.log_path}"
        assert "Unrecoverable error" not in stage.log("worker-ingest")
        assert recovery <= RECOVERY_BOUND_S, f"stored {recovery:.0f} s after SIGCONT"
    finally:
        stage.close()
