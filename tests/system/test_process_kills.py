"""Processes killed with SIGKILL mid-work: nothing lost, no conflict, recovery bounded.

The real bridge and ingest worker run under the dev stack's supervisor, which restarts them
as compose would. Each test ends with its ledger (``FAULT`` line): produced, stored, lost,
written again, conflicts, and the time from the last fault to the last event stored.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis

from tests.support.fault_harness import Stage, wait
from worker.core.events import decode_event
from worker.ops.demo import demo_events

pytestmark = pytest.mark.faults

RECOVERY_BOUND_S = 60.0


@pytest.fixture
def stage(env: dict[str, str], tmp_path: Path) -> Iterator[Stage]:
    stage = Stage(env, tmp_path)
    yield stage
    stage.close()


def waiting_writes(dsn: str) -> int:
    """Store writes blocked on a lock (the worker is inside a batch)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'aggregator-store' "
                    "AND wait_event_type = 'Lock'")
        return int(cur.fetchone()[0])


#: A dead worker's batches are back within this bound of its restart (docs/guarantees.md).
WORKER_RECOVERY_BOUND_S = 30.0


def test_ingest_worker_killed_mid_batch_three_times(stage: Stage) -> None:
    """40,000 events; three SIGKILLs while the worker holds batches (its writes wait on a lock).

    The bridge's confirm timeout is set far above the bound, so its re-read cannot be what
    brings the dead worker's batches back: the workers' own recovery must
    (worker/celeryapp/liveness.py).
    """
    stage.env["BRIDGE_CONFIRM_TIMEOUT_S"] = "600"
    stage.start_worker()
    stage.start_bridge()
    stage.produce(list(demo_events(10_000, 400, seed=21)))
    wait(lambda: stage.stored()[1] > 0, 60, "ingestion under way")
    worker = stage.supervisor.children["worker-ingest"]
    last_restart = time.monotonic()
    for round_ in range(3):
        locker = psycopg2.connect(stage.dsn)
        try:
            with locker.cursor() as cur:  # the worker's next write waits here, inside its batch
                cur.execute("LOCK TABLE discussion_event IN SHARE ROW EXCLUSIVE MODE")
            # Produced after the lock: produced first, a quick pipeline could store them all
            # before the lock, and no write would wait.
            stage.produce(list(demo_events(10_000, 400, seed=30 + round_)))
            wait(lambda: waiting_writes(stage.dsn) >= 1, 60, "a batch write waits on the lock")
            stage.supervisor.signal("worker-ingest", signal.SIGKILL)
            wait(lambda: worker.restarts > round_ and worker.alive, 30,  # noqa: B023 - awaited here
                 "the worker restarted")
            last_restart = time.monotonic()
        finally:
            locker.rollback()
            locker.close()
    stage.wait_all_stored(120)
    recovery = time.monotonic() - last_restart
    ledger = stage.ledger("ingest worker SIGKILL mid-batch x3", recovery)
    assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 40_000)
    assert recovery <= WORKER_RECOVERY_BOUND_S, f"recovered in {recovery:.0f} s"
    assert worker.restarts == 3
    wait(lambda: stage.committed() == 40_000, 60, "every offset committed once stored")


def test_bridge_killed_mid_stream(stage: Stage) -> None:
    stage.start_worker()
    stage.start_bridge()
    stage.produce(list(demo_events(4000, 40, seed=22)))
    wait(lambda: stage.stored()[1] >= 500, 60, "ingestion under way")
    bridge = stage.supervisor.children["bridge"]
    pid = bridge.pid
    stage.supervisor.signal("bridge", signal.SIGKILL)
    killed = time.monotonic()
    stage.produce(list(demo_events(1000, 40, seed=23)))
    wait(lambda: bridge.pid != pid and bridge.alive, 30, "the bridge restarted")
    wait(stage.all_stored, 120, "every event stored")
    recovery = time.monotonic() - killed
    ledger = stage.ledger("bridge SIGKILL", recovery)
    assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 5000)
    assert recovery <= RECOVERY_BOUND_S, f"recovered in {recovery:.0f} s"
    wait(lambda: stage.committed() == 5000, 60, "every offset committed once stored")


def blocked_pops(client: redis.Redis) -> int:
    """Redis connections blocked in a pop: a worker waiting for work on its queue."""
    return sum(1 for c in client.client_list() if "b" in c["flags"])


def test_a_batch_redis_handed_to_a_worker_killed_before_it_read_it_comes_back(stage: Stage) -> None:
    """The window of celery#4354: Redis pops a batch for a worker's waiting pop and writes it
    to the worker's socket; the worker dies before it reads it. With kombu's BRPOP the batch
    was then in no queue and no unacked hash (worker/celeryapp/inflight.py). The worker's
    frozen group (SIGSTOP) holds that window open. The bridge is not running, so its re-read
    cannot be what brings the batch back."""
    from worker.app import app
    from worker.ingest.publisher import IngestPublisher

    client = redis.Redis.from_url(stage.env["REDIS_URL"])
    publisher = IngestPublisher(app, "ingest")
    stage.start_worker(concurrency=1)
    worker = stage.supervisor.children["worker-ingest"]
    for attempt in range(5):  # a pop times out every second: the batch may come just after
        wait(lambda: blocked_pops(client) == 1, 60, "the worker waits on its queue")
        stage.supervisor.signal("worker-ingest", signal.SIGSTOP)
        points = [decode_event(raw) for raw in demo_events(50, 5, seed=41 + attempt)]
        publisher.publish(points, f"ingest:popped-unread-{attempt}")
        stage.produced.extend(point.event_id for point in points)
        if client.llen("ingest") == 0:  # Redis handed it to the frozen worker's pop
            break
        stage.supervisor.signal("worker-ingest", signal.SIGCONT)
        wait(stage.all_stored, 30, "the batch stored by the woken worker")
    else:
        raise AssertionError("the worker's pop timed out before each of 5 batches")
    stage.supervisor.signal("worker-ingest", signal.SIGKILL)
    wait(lambda: worker.restarts == 1 and worker.alive, 30, "the worker restarted")
    restarted = time.monotonic()
    stage.wait_all_stored(60)
    recovery = time.monotonic() - restarted
    ledger = stage.ledger("ingest worker SIGKILL with a batch unread in its socket", recovery)
    assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, 50 * (attempt + 1))
    assert recovery <= WORKER_RECOVERY_BOUND_S, f"recovered in {recovery:.0f} s"
