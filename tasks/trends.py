"""Trend runs on the `trends` queue (served with concurrency 1): run -> chord -> finalize.

Thin wrappers: the lifecycle (lease, plan, chunks, finalize, failure, crash recovery) is
:class:`worker.trends.lifecycle.TrendRuns`, shared with `aggregator trends run`. The lease
token travels through the chord; every chunk renews it, the callback and the errback
release it. Durations travel as their names (``duration_name``) and are looked up in the
process's settings at each step.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, chord

from worker.celeryapp.app import app
from worker.celeryapp.resources import for_process
from worker.core import names
from worker.core.durations import Duration
from worker.trends import metrics
from worker.trends.lifecycle import RunInFlight
from worker.trends.planning import run_time_ns

log = logging.getLogger(__name__)


def _duration(duration_name: str) -> Duration:
    durations = for_process().settings.durations()
    if duration_name not in durations:
        raise ValueError(f"unknown duration {duration_name!r} (known: {sorted(durations)})")
    return durations[duration_name]


@app.task(name=names.RUN_TREND, bind=True)
def run_trend(self: Task[Any, Any], duration_name: str, at: str | None = None) -> dict[str, Any]:
    resources = for_process()
    queue = resources.settings.trends_queue
    duration = _duration(duration_name)
    try:
        started = resources.trend_runs.begin(duration, run_time_ns(at), holder=self.request.hostname)
    except RunInFlight as busy:
        log.warning("run skipped: the previous run of this duration is still in flight",
                    extra={"duration": duration_name, "detail": busy.message})
        metrics.RUNS_SKIPPED.labels(duration_name).inc()
        return {"status": "skipped", "duration": duration_name}
    plan, token = started.plan, started.token
    try:
        log.info("trend run planned", extra={"run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks)})
        callback = finalize_trend.s(plan.run_id, duration_name, plan.now_ns, token).set(queue=queue)
        callback = callback.on_error(trend_failed.s(plan.run_id, duration_name, token).set(queue=queue))
        if not plan.chunks:  # nothing qualifies: the duration's rows become empty, atomically
            callback.delay([])
        else:
            chord(compute_chunk.s(plan.run_id, duration_name, plan.now_ns, dois, token).set(queue=queue)
                  for dois in plan.chunks)(callback)
    except Exception as error:
        resources.trend_runs.fail(duration, plan.run_id, token, f"chord not launched: {error!r}")
        raise
    return {"status": "started", "run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks),
            "abandoned": started.abandoned}


@app.task(name=names.COMPUTE_CHUNK, bind=True, acks_late=True)
def compute_chunk(self: Task[Any, Any], run_id: str, duration_name: str, now_ns: int, dois: list[str],
                  token: str = "") -> int:
    return for_process().trend_runs.chunk(_duration(duration_name), run_id, now_ns, dois, token)


@app.task(name=names.FINALIZE_TREND, bind=True)
def finalize_trend(self: Task[Any, Any], counts: list[int], run_id: str, duration_name: str, now_ns: int,
                   token: str) -> dict[str, Any]:
    result = for_process().trend_runs.finish(_duration(duration_name), run_id, now_ns, token)
    log.info("trend run finished", extra={**result, "chunk_rows": sum(counts)})
    if result["status"] == "finalized":
        metrics.RUNS_FINALIZED.labels(duration_name).inc()
    return result


@app.task(name=names.TREND_FAILED)
def trend_failed(request: Any, exc: BaseException, traceback: str, run_id: str, duration_name: str,
                 token: str) -> None:
    """Errback of the chord callback: a chunk (or the finalize) failed; old rows stay."""
    log.error("trend run failed; current rows kept", extra={
        "run_id": run_id, "duration": duration_name, "task_id": getattr(request, "id", None), "error": repr(exc)})
    metrics.RUNS_FAILED.labels(duration_name).inc()
    for_process().trend_runs.fail(_duration(duration_name), run_id, token, repr(exc))
