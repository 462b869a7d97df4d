"""Redis, the queue that may forget: killed with and without persistence while batches wait
in it, and restarted under a working worker. Kafka stays the record: a batch whose
confirmation never comes is read again, so nothing is lost, and the idempotent store write
keeps copies from counting twice."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.devstack.services import PostgresServer, RedisServer
from tests.support.fault_harness import Stage, wait
from worker.ops.demo import demo_events

pytestmark = pytest.mark.faults

RECOVERY_BOUND_S = 60.0


@pytest.fixture
def own_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A Redis of the test's own (the others share one); persistent when parametrized so."""
    workdir = Path(tempfile.mkdtemp(prefix="agg-fault-redis-"))
    server = RedisServer(workdir, persistent=getattr(request, "param", False)).start()
    yield server
    server.stop()


@pytest.fixture
def stage(env: dict[str, str], own_redis: RedisServer, tmp_path: Path) -> Iterator[Stage]:
    stage = Stage({**env, "REDIS_URL": own_redis.url}, tmp_path)
    yield stage
    stage.close()


def queued_tasks(url: str) -> int:
    try:
        return int(redis.Redis.from_url(url, socket_timeout=1).llen("ingest"))
    except redis.RedisError:
        return -1


@pytest.mark.parametrize("own_redis", [False, True], ids=["no-persistence", "aof-everysec"], indirect=True)
def test_redis_killed_while_batches_wait_in_it(stage: Stage, own_redis: RedisServer) -> None:
    stage.start_bridge()  # no worker yet: the batches wait in Redis
    stage.produce(list(demo_events(3000, 40, seed=41)))
    wait(lambda: queued_tasks(own_redis.url) >= 10, 60, "batches queued in Redis")
    own_redis.kill()  # SIGKILL: with AOF everysec up to a second of writes is gone, without it all
    own_redis.start()
    restarted = time.monotonic()
    stage.start_worker()
    wait(stage.all_stored, 120, "every event stored")
    recovery = time.monotonic() - restarted
    mode = "AOF everysec" if own_redis.persistent else "no persistence"
    ledger = stage.ledger(f"Redis SIGKILL with batches queued ({mode})", recovery)
    assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 3000)
    assert recovery <= RECOVERY_BOUND_S, f"recovered in {recovery:.0f} s"
    wait(lambda: stage.committed() == 3000, 60, "every offset committed once stored")


def test_redis_restarted_under_a_working_worker(env: dict[str, str], own_redis: RedisServer,
                                                own_pg: PostgresServer, tmp_path: Path) -> None:
    """Redis crashes and comes back while the worker holds deliveries (the store is down too,
    so batches wait as retries): the worker reconnects without dying (kombu's restore crash
    is guarded, worker/celeryapp/kombu_guard.py; its race is made deterministic in
    tests/celeryapp/test_kombu_guard.py), and once both are back everything is stored, once."""
    # Retries seconds apart: the worker holds their deliveries (ETA) while Redis goes away.
    stage = Stage({**env, "REDIS_URL": own_redis.url, "POSTGRES_DSN": own_pg.dsn}, tmp_path,
                  INGEST_RETRY_BACKOFF_S="5", INGEST_RETRY_BACKOFF_MAX_S="20", BRIDGE_CONFIRM_TIMEOUT_S="40")
    try:
        stage.start_worker()
        stage.start_bridge()
        stage.produce(list(demo_events(1000, 40, seed=42)))
        wait(lambda: stage.stored()[1] > 0, 60, "ingestion under way")
        worker = stage.supervisor.children["worker-ingest"]
        own_pg.stop()
        stage.produce(list(demo_events(2000, 40, seed=43)))
        wait(lambda: "store unavailable, retrying" in stage.log("worker-ingest"), 60, "batches retrying")
        own_redis.kill()  # a crash and a restart (compose brings it back)
        wait(lambda: "Connection to broker lost" in stage.log("worker-ingest"), 30, "the worker saw Redis go")
        own_redis.start()
        own_pg.start()
        restarted = time.monotonic()
        wait(stage.all_stored, 120, "every event stored")
        recovery = time.monotonic() - restarted
        ledger = stage.ledger("Redis restart under a running worker", recovery)
        assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 3000)
        assert worker.restarts == 0, f"the worker died ({worker.exits}); see {worker.log_path}"
        assert "Unrecoverable error" not in stage.log("worker-ingest")
        assert recovery <= RECOVERY_BOUND_S, f"recovered in {recovery:.0f} s"
    finally:
        stage.close()
