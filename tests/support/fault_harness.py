"""The fault suite's stage: the real product processes under the dev stack's supervisor
(restarted when they die, as compose does), real Kafka (Tansu), Redis and PostgreSQL, and
the ledger every fault test ends with: produced / stored / lost, the events written again
and the conflicts, and how long recovery took.

Stored once is the schema's guarantee: the key ``(event_id, time)`` of ``discussion_event``
turns a redelivered event's second write into nothing, so counting rows against distinct
ids would measure nothing. The ledger counts what the key hides instead, from the ingest
task's own counters (its ``batch written`` lines carry the figures of
``aggregator_ingest_events_written`` and ``aggregator_ingest_conflicts``): the events
written more than once, and the events that reused a stored id with other content.

Each fault test prints one ``FAULT`` line with its figures; with ``FAULT_REPORT=path`` set it
also appends them as a JSON line (docs/operating.md's fault table reports them).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg2
import redis
from confluent_kafka import Producer

from tests.support.devstack.services import ServiceError, wait_until
from tests.support.devstack.supervisor import Supervisor
from tests.support.helpers import committed_total

CELERY = [sys.executable, "-m", "celery", "-A", "worker.app"]
AGGREGATOR = [sys.executable, "-m", "worker.ops.cli"]

#: Settings of a product process in the fault suite: the defaults, with the loss-detection
#: and retry timings shortened so recovery is quick enough to wait for.
FAULT_SETTINGS = {
    "BRIDGE_CONFIRM_TIMEOUT_S": "15",
    "INGEST_RETRY_BACKOFF_S": "0.2",
    "INGEST_RETRY_BACKOFF_MAX_S": "1",
    "BRIDGE_MIN_BATCH": "50",
    "BRIDGE_MAX_BATCH": "200",
    "BRIDGE_MAX_BATCH_AGE_S": "1",
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "INGEST_RATE_LIMIT": "1000/s",
    # The fault tests hold a table locked to catch a process mid-operation before they kill
    # it; a lock timeout would end the wait first (tests/tasks/test_trend_worker.py tests it).
    "PG_LOCK_TIMEOUT_S": "0",
}


def wait(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Await a state another process produces; returns how long it took."""
    started = time.monotonic()
    wait_until(check, timeout, what)
    return time.monotonic() - started


_WRITTEN = re.compile(r'msg="batch written".*?\bevents=(\d+).*?\bconflicts=(\d+)')


def written(log: str) -> tuple[int, int]:
    """(events, conflicts) of an ingest worker's log: every write counted, copies included."""
    counts = [(int(m.group(1)), int(m.group(2))) for m in _WRITTEN.finditer(log)]
    return sum(e for e, _ in counts), sum(c for _, c in counts)


@dataclass
class Ledger:
    fault: str
    produced: int
    stored: int
    lost: int
    written_again: int  # writes past the first of each stored event (redeliveries the key absorbed)
    conflicts: int  # events that reused a stored id with other content (not stored)
    dead_lettered: int
    recovery_s: float

    def record(self) -> None:
        line = json.dumps(asdict(self))
        print(f"FAULT {line}")
        target = os.environ.get("FAULT_REPORT")
        if target:
            with open(target, "a") as out:
                out.write(line + "\n")


class Stage:
    """One fault test's processes; everything still running is stopped at the end."""

    def __init__(self, env: dict[str, str], logs: Path, *, supervise: bool = True, **overrides: str) -> None:
        """``supervise=False``: a process that exits stays dead (a test that no process may exit)."""
        self.env = {**os.environ, **env, **FAULT_SETTINGS, **overrides, "PYTHONUNBUFFERED": "1"}
        self.logs = logs
        self.supervisor = Supervisor()
        if supervise:
            self.supervisor.run_in_background()
        self.produced: list[str] = []
        self.ingest_workers: list[str] = []

    @property
    def dsn(self) -> str:
        return self.env["POSTGRES_DSN"]

    def start_worker(self, queue: str = "ingest", concurrency: int = 2, name: str | None = None) -> str:
        name = name or f"worker-{queue}"
        if queue == "ingest":
            self.ingest_workers.append(name)
        # As compose runs it (gossip and mingle included: the restore crash needed them).
        self.supervisor.start(name, [*CELERY, "worker", "-Q", queue, "-c", str(concurrency), "-n",
                                     f"{name}@%h", "-l", "info"], self.env, self.logs / f"{name}.log")
        return name

    def start_bridge(self, name: str = "bridge") -> str:
        self.supervisor.start(name, [*AGGREGATOR, "bridge"], self.env, self.logs / f"{name}.log")
        return name

    def start_beat(self, name: str = "beat") -> str:
        self.supervisor.start(name, [*CELERY, "beat", "-l", "info"], self.env, self.logs / f"{name}.log")
        return name

    def dead(self) -> list[str]:
        """The processes that exited (a supervised one may be running again by now)."""
        return [child.name for child in self.supervisor.children.values() if not child.alive or child.exits]

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def produce(self, payloads: list[bytes], ids: list[str] | None = None) -> None:
        producer = Producer({"bootstrap.servers": self.env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 5})
        for i, payload in enumerate(payloads):
            producer.produce(self.env["KAFKA_TOPIC"], payload, key=str(len(self.produced) + i).encode())
        assert producer.flush(30) == 0
        self.produced.extend(ids if ids is not None else [json.loads(p)["id"] for p in payloads])

    def stored(self) -> tuple[int, int]:
        """(rows, distinct event ids) in the store."""
        with psycopg2.connect(self.dsn, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*), count(DISTINCT event_id) FROM discussion_event")
            rows, distinct = cur.fetchone() or (0, 0)
            return int(rows), int(distinct)

    def stored_ids(self) -> set[str]:
        with psycopg2.connect(self.dsn, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute("SELECT event_id FROM discussion_event")
            return {row[0] for row in cur.fetchall()}

    def all_stored(self) -> bool:
        try:
            return self.stored()[1] >= len(set(self.produced))
        except psycopg2.Error:
            return False

    def wait_all_stored(self, timeout: float) -> None:
        """Await every produced event in the store; failing, say where the missing ones are:
        in a queue, held by a worker, or in neither (lost to Redis: only the bridge's re-read
        can bring them back)."""
        try:
            wait(self.all_stored, timeout, "every event stored")
        except ServiceError as error:
            client = redis.Redis.from_url(self.env["REDIS_URL"])
            held = {key.decode(): client.hlen(key) for key in client.scan_iter("unacked:*")}
            workers = sorted(member.decode() for member in client.smembers("aggregator:workers"))
            missing = len(set(self.produced) - self.stored_ids())
            raise AssertionError(f"{error}: {missing} not stored; ingest queue {client.llen('ingest')} "
                                 f"tasks, held (unacked) {held}, registered workers {workers}") from error

    def committed(self) -> int:
        return committed_total(self.env["KAFKA_BOOTSTRAP_SERVERS"], self.env["KAFKA_GROUP_ID"],
                               self.env["KAFKA_TOPIC"])

    def ledger(self, fault: str, recovery_s: float, dead_lettered: int = 0) -> Ledger:
        ids = self.stored_ids()
        produced = set(self.produced)
        events, conflicts = map(sum, zip(*(written(self.log(name)) for name in self.ingest_workers), strict=True))
        ledger = Ledger(fault, len(produced), len(ids), len(produced - ids), events - len(ids), conflicts,
                        dead_lettered, round(recovery_s, 1))
        ledger.record()
        return ledger

    def close(self) -> None:
        self.supervisor.stop_all(timeout_s=15)
