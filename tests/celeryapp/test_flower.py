"""Flower 2 against the real Redis and a real worker: what operators see, with basic auth.

Runs Flower exactly as compose does (`celery -A worker.app flower`, FLOWER_BASIC_AUTH from
the environment) and reads back the two API answers the README (Operating it) tells operators to
watch. Flower's answers are printed (`pytest -s`) so the documentation can quote them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.support.devstack.services import free_port
from tests.support.helpers import CELERY, log_text, start_worker, wait_for
from worker.config.settings import Settings
from worker.ops.health import celery_ping

pytestmark = pytest.mark.integration

USER, PASSWORD = "ops", "s3cret"
AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def get(port: int, path: str, *, auth: bool = True, timeout: float = 10) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if auth:
        request.add_header("Authorization", AUTH)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode(errors="replace")


def show(label: str, value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    print(f"\n--- Flower {label} ---\n{text}")
    return text


def abridged(workers: dict[str, Any]) -> dict[str, Any]:
    """What an operator looks at per worker (the full answer holds conf, registered, ...)."""
    return {node: {"active_queues": [q["name"] for q in info.get("active_queues") or []],
                   "concurrency": (info.get("stats") or {}).get("pool", {}).get("max-concurrency"),
                   "registered": info.get("registered") or [],
                   "prefetch_count": (info.get("stats") or {}).get("prefetch_count")}
            for node, info in workers.items()}


def test_flower_shows_our_worker_and_queue_lengths(redis_url: str, spawn: Callable[..., subprocess.Popen]) -> None:
    from worker.app import app

    env = {"REDIS_URL": redis_url}
    port = free_port()
    flower = spawn([*CELERY, "flower", f"--port={port}", "--address=127.0.0.1", "--purge_offline_workers=600"],
                   {**env, "FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}"}, "flower")
    wait_for(lambda: flower.poll() is not None or get(port, "/healthcheck", auth=False, timeout=1)[0] == 200,
             30, "flower /healthcheck")
    assert flower.poll() is None, log_text(flower)[-3000:]

    # Basic auth is enforced on the API; /healthcheck stays open for the container check.
    status, body = get(port, "/api/workers", auth=False)
    assert status == 401, f"/api/workers without auth answered {status}: {body}"
    assert get(port, "/api/queues/length", auth=False)[0] == 401

    # Three tasks on the trends queue, which no worker serves: Flower counts them. (Nothing
    # executes them; the names route to the trends queue like real trend tasks.)
    for i in range(3):
        app.send_task("tasks.trends.flower_probe", args=[i], queue="trends")
    status, lengths = get(port, "/api/queues/length")
    show("/api/queues/length (no worker known yet)", lengths)
    assert status == 200
    by_name = {q["name"]: q["messages"] for q in lengths["active_queues"]}
    assert by_name.get("trends") == 3, lengths
    assert "ingest" in by_name, lengths

    worker = start_worker(spawn, env, queue="ingest")
    node = worker.node  # type: ignore[attr-defined]  # set by start_worker

    def listed() -> bool:
        status, workers = get(port, "/api/workers?refresh=1")
        return status == 200 and node in workers

    wait_for(listed, 30, f"{node} in Flower's /api/workers")
    status, workers = get(port, "/api/workers")
    text = show("/api/workers (abridged)", abridged(workers))
    assert status == 200 and node in workers, text
    assert [q["name"] for q in workers[node]["active_queues"]] == ["ingest"], text
    # The ingest task is registered, without a Celery rate limit (the write limit is the shared
    # bucket in Redis, not a per-worker one Flower would show next to the name).
    registered = [name for name in workers[node]["registered"] if name.split(" ")[0] == "tasks.ingest.write_batch"]
    assert registered and "rate_limit=" not in registered[0], text

    status, lengths = get(port, "/api/queues/length")
    text = show("/api/queues/length (worker on ingest known)", lengths)
    names = [q["name"] for q in lengths["active_queues"]]
    assert "ingest" in names, text
    # Flower 2.2 lists only the queues its known workers consume once it knows any worker:
    # the 3 tasks still waiting on `trends` no longer appear (the README (Operating it) warns).
    assert "trends" not in names, text

    # The container healthcheck's ping finds this worker by host pattern.
    assert node in celery_ping(Settings(redis_url=redis_url), "localhost")
