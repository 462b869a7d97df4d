"""Trend runs on the `trends` queue (served with concurrency 1): run -> chord -> finalize.

The run task takes the duration's overlap lock (skipped and logged when a run is in
flight), plans the chunks, and launches a chord of chunk subtasks whose callback finalizes.
The lock token travels through the chord; the callback and the errback release it.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import redis
from celery import Task, chord

from worker.app import app
from worker.durations import get_durations
from worker.runtime import event_store
from worker.settings import get_settings
from worker.trends import engine, publish
from worker.trends.lock import RunLock

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    settings = get_settings()
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=settings.connect_timeout_s,
                                socket_connect_timeout=settings.connect_timeout_s)


def run_lock(duration: str) -> RunLock:
    return RunLock(_redis(), duration, get_settings().trend_lock_ttl_s)


@app.task(name="tasks.trends.run_trend", bind=True)
def run_trend(self: Task[Any, Any], duration_name: str, at: str | None = None) -> dict[str, Any]:
    settings = get_settings()
    durations = get_durations()
    if duration_name not in durations:
        raise ValueError(f"unknown duration {duration_name!r} (known: {sorted(durations)})")
    duration = durations[duration_name]
    token = engine.new_token()
    lock = run_lock(duration_name)
    if not lock.acquire(token):
        log.warning("run skipped: the previous run of this duration is still in flight",
                    extra={"duration": duration_name, "holder": lock.holder()})
        return {"status": "skipped", "duration": duration_name}
    try:
        now_ns = engine.run_time_ns(at)
        plan = engine.plan_run(settings, event_store(), duration, now_ns, token)
        log.info("trend run planned", extra={"run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks)})
        callback = finalize_trend.s(plan.run_id, duration_name, now_ns, token).set(queue=settings.trends_queue)
        callback = callback.on_error(trend_failed.s(plan.run_id, duration_name, token).set(
            queue=settings.trends_queue))
        if not plan.chunks:  # nothing qualifies: the duration's rows become empty, atomically
            callback.delay([])
        else:
            chord(compute_chunk.s(plan.run_id, duration_name, now_ns, chunk).set(queue=settings.trends_queue)
                  for chunk in plan.chunks)(callback)
    except Exception:
        lock.release(token)
        raise
    return {"status": "started", "run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks)}


@app.task(name="tasks.trends.compute_chunk", bind=True, acks_late=True)
def compute_chunk(self: Task[Any, Any], run_id: str, duration_name: str, now_ns: int, dois: list[str]) -> int:
    duration = get_durations()[duration_name]
    return engine.compute_chunk(get_settings(), event_store(), duration, run_id, now_ns, dois)


@app.task(name="tasks.trends.finalize_trend", bind=True)
def finalize_trend(self: Task[Any, Any], counts: list[int], run_id: str, duration_name: str, now_ns: int,
                   token: str) -> dict[str, Any]:
    try:
        result = engine.finalize_run(get_settings(), event_store(), run_id, duration_name, now_ns)
    finally:
        run_lock(duration_name).release(token)
    log.info("trend run finished", extra={**result, "chunk_rows": sum(counts)})
    return result


@app.task(name="tasks.trends.trend_failed")
def trend_failed(request: Any, exc: BaseException, traceback: str, run_id: str, duration_name: str,
                 token: str) -> None:
    """Errback of the chord callback: a chunk (or the finalize) failed; old rows stay."""
    log.error("trend run failed; current rows kept", extra={
        "run_id": run_id, "duration": duration_name, "task_id": getattr(request, "id", None), "error": repr(exc)})
    try:
        publish.fail_run(get_settings().postgres_dsn.get_secret_value(), run_id, repr(exc))
    finally:
        run_lock(duration_name).release(token)
