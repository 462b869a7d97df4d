"""Trend runs on the `trends` queue (served with concurrency 1): run -> chord -> finalize.

Thin wrappers: the lifecycle (lease, plan, chunks, finalize, failure, crash recovery) is
:mod:`worker.trends.runner`, shared with `aggregator trends run`. The lease token travels
through the chord; every chunk renews it, the callback and the errback release it.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, chord

from worker.app import app
from worker.durations import get_durations
from worker.runtime import event_store
from worker.settings import get_settings
from worker.trends import engine, runner

log = logging.getLogger(__name__)


@app.task(name="tasks.trends.run_trend", bind=True)
def run_trend(self: Task[Any, Any], duration_name: str, at: str | None = None) -> dict[str, Any]:
    settings = get_settings()
    durations = get_durations()
    if duration_name not in durations:
        raise ValueError(f"unknown duration {duration_name!r} (known: {sorted(durations)})")
    try:
        started = runner.begin(settings, event_store(), durations[duration_name], engine.run_time_ns(at))
    except runner.RunInFlight as busy:
        log.warning("run skipped: the previous run of this duration is still in flight",
                    extra={"duration": duration_name, "detail": busy.message})
        return {"status": "skipped", "duration": duration_name}
    plan, token = started.plan, started.token
    try:
        log.info("trend run planned", extra={"run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks)})
        callback = finalize_trend.s(plan.run_id, duration_name, plan.now_ns, token).set(queue=settings.trends_queue)
        callback = callback.on_error(trend_failed.s(plan.run_id, duration_name, token).set(
            queue=settings.trends_queue))
        if not plan.chunks:  # nothing qualifies: the duration's rows become empty, atomically
            callback.delay([])
        else:
            chord(compute_chunk.s(plan.run_id, duration_name, plan.now_ns, dois, token).set(
                queue=settings.trends_queue) for dois in plan.chunks)(callback)
    except Exception as error:
        runner.fail(settings, plan.run_id, duration_name, token, f"chord not launched: {error!r}")
        raise
    return {"status": "started", "run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks),
            "abandoned": started.abandoned}


@app.task(name="tasks.trends.compute_chunk", bind=True, acks_late=True)
def compute_chunk(self: Task[Any, Any], run_id: str, duration_name: str, now_ns: int, dois: list[str],
                  token: str = "") -> int:
    duration = get_durations()[duration_name]
    return runner.chunk(get_settings(), event_store(), duration, run_id, now_ns, dois, token)


@app.task(name="tasks.trends.finalize_trend", bind=True)
def finalize_trend(self: Task[Any, Any], counts: list[int], run_id: str, duration_name: str, now_ns: int,
                   token: str) -> dict[str, Any]:
    result = runner.finish(get_settings(), event_store(), run_id, duration_name, now_ns, token)
    log.info("trend run finished", extra={**result, "chunk_rows": sum(counts)})
    return result


@app.task(name="tasks.trends.trend_failed")
def trend_failed(request: Any, exc: BaseException, traceback: str, run_id: str, duration_name: str,
                 token: str) -> None:
    """Errback of the chord callback: a chunk (or the finalize) failed; old rows stay."""
    log.error("trend run failed; current rows kept", extra={
        "run_id": run_id, "duration": duration_name, "task_id": getattr(request, "id", None), "error": repr(exc)})
    runner.fail(get_settings(), run_id, duration_name, token, repr(exc))
