"""Redis full (maxmemory with noeviction, as compose runs it) during a store outage: Redis
refuses writes, the bridge keeps what it holds and pauses, nothing is lost, and everything
is stored once the store is back and Redis has room again."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.support.devstack.services import PostgresServer
from tests.support.fault_harness import Stage, wait
from worker.ops.demo import demo_events

pytestmark = pytest.mark.faults

#: Room left in Redis when the outage starts: a few dozen batches.
HEADROOM_BYTES = 1_000_000


def test_full_redis_during_an_outage_holds_back_and_loses_nothing(env: dict[str, str], own_pg: PostgresServer,
                                                                   redis_url: str, tmp_path: Path) -> None:
    client = redis.Redis.from_url(redis_url)
    stage = Stage({**env, "POSTGRES_DSN": own_pg.dsn}, tmp_path, BRIDGE_MAX_IN_FLIGHT="1000",
                  BRIDGE_QUEUE_HIGH_WATERMARK="1000", BRIDGE_QUEUE_LOW_WATERMARK="500")
    try:
        stage.start_worker()
        stage.start_bridge()
        stage.produce(list(demo_events(500, 40, seed=71)))
        wait(stage.all_stored, 60, "the first events stored")
        own_pg.stop()
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used + HEADROOM_BYTES)
        for batch in range(10):  # far more than fits: about 3 MB of batches
            stage.produce(list(demo_events(1000, 40, seed=80 + batch)))
        wait(lambda: "used memory > 'maxmemory'" in stage.log("bridge"), 120, "Redis refusing the bridge's publish")
        assert int(client.info("memory")["used_memory"]) <= used + HEADROOM_BYTES * 1.1
        own_pg.start()
        client.config_set("maxmemory", 0)
        wait(stage.all_stored, 240, "every event stored once the store is back and Redis has room")
        ledger = stage.ledger("redis full during a store outage", 0.0)
        assert (ledger.lost, ledger.conflicts) == (0, 0)
        assert ledger.produced == 500 + 10 * 1000
        wait(lambda: stage.committed() == ledger.produced, 120, "every offset committed once stored")
    finally:
        client.config_set("maxmemory", 0)
        stage.close()
