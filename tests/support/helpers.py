"""Helpers shared by the integration and end-to-end tests (real processes, real services)."""

from __future__ import annotations

__all__ = ["AGGREGATOR", "CELERY"]  # re-exported: tests start processes as `aggregator dev` does

import base64
import json
import math
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg2
import redis
from confluent_kafka import Consumer, TopicPartition

from tests.support.devstack.run import AGGREGATOR, CELERY
from tests.support.devstack.services import wait_until
from worker.core.events import points_from_wire


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Await a state another process produces (a row count, a log line, a queue length)."""
    wait_until(check, timeout, what)


def admitted_bound(capacity: float, rate: float, interval_s: float) -> float:
    """The most takes a token bucket may grant within any ``interval_s``: its burst plus the refill."""
    return math.floor(capacity) + rate * interval_s


def q(dsn: str, sql: str, params: tuple[object, ...] | None = None) -> list[tuple[Any, ...]]:
    """One statement in its own committed transaction; its rows, if it returns any."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()


def count_events(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM discussion_event")
        return int(cur.fetchone()[0])


def log_text(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]


def start_worker(spawn: Callable, env: dict[str, str], queue: str = "ingest", concurrency: int = 1,
                 name: str | None = None) -> subprocess.Popen:
    """A real Celery worker process; returns once it answers a ping."""
    from worker.app import app

    node = f"{name or queue}-{uuid.uuid4().hex[:6]}@localhost"
    proc = spawn([*CELERY, "worker", "-Q", queue, "-c", str(concurrency), "-n", node, "-l", "info",
                  "--without-mingle", "--without-gossip"], env, node.split("@")[0])
    wait_for(lambda: bool(app.control.ping(destination=[node], timeout=0.5)) or _dead(proc), 60,
             f"celery worker {node}")
    assert proc.poll() is None, log_text(proc)[-3000:]
    proc.node = node
    return proc


def _dead(proc: subprocess.Popen) -> bool:
    return proc.poll() is not None


def committed_total(bootstrap: str, group: str, topic: str, partitions: int = 2) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        got = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return sum(max(tp.offset, 0) for tp in got)
    finally:
        consumer.close()


def queued_batch_sizes(client: redis.Redis, queue: str) -> list[int]:
    """Events in each ingest task waiting in Redis.

    The message is kombu's JSON envelope with a base64 body: Celery protocol 2's
    ``[args, kwargs, embed]``, where ``args[0]`` is the batch as :func:`points_to_wire` made it.
    """
    sizes = []
    for raw in client.lrange(queue, 0, -1):
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        sizes.append(len(points_from_wire(json.loads(body)[0][0])))
    return sizes


def queued_points(redis_url: str, queue: str = "ingest") -> int:
    """Events waiting in the ingest queue (sum over the queued tasks' batches)."""
    return sum(queued_batch_sizes(redis.Redis.from_url(redis_url), queue))


def send_until_started(app: Any, duration: str, at: str, timeout: float,
                       wait: Callable[[Callable[[], bool], float, str], object] = wait_for) -> dict[str, Any]:
    """Beat, faster: send ``duration``'s run for ``at`` again and again until one starts
    (a lease still held answers ``skipped``); the started run's result."""
    started: dict[str, Any] = {}

    def next_run_started() -> bool:
        result = app.send_task("tasks.trends.run_trend", args=(duration, at), queue="trends").get(timeout=30)
        if result["status"] == "started":
            started.update(result)
        return bool(started)

    wait(next_run_started, timeout, f"the next {duration} run took the lease")
    return started
