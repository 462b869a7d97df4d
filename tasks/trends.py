"""Trend runs on the `trends` queue: run -> chord -> finalize, wrapping
:class:`worker.trends.lifecycle.TrendRuns`. Every task of the chord carries the errback
``trend_failed``, so a failing task fails the run at once (docs/trends.md, "How a run fails").
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
from worker.trends.lifecycle import FailureNotRecorded, RunInFlight, failure_reason
from worker.trends.planning import run_time_ns

log = logging.getLogger(__name__)

#: Retries of a failure PostgreSQL did not take, every few seconds: an hour of outage. Past
#: that, the duration's next run gives the run up (``abandon_runs``).
RECORD_RETRIES = 720


def _duration(duration_name: str) -> Duration:
    durations = for_process().settings.durations()
    if duration_name not in durations:
        raise ValueError(f"unknown duration {duration_name!r} (known: {sorted(durations)})")
    return durations[duration_name]


def _record_later(unrecorded: FailureNotRecorded) -> None:
    """The run's lease is free already; its mark ``failed`` is written once PostgreSQL answers."""
    log.warning("trend run failed; PostgreSQL did not take the mark, retrying until it does",
                extra={"run_id": unrecorded.run_id, "error": unrecorded.reason})
    record_run_failure.apply_async((unrecorded.duration, unrecorded.run_id, unrecorded.reason), countdown=1,
                                   queue=for_process().settings.trends_queue)


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
    except FailureNotRecorded as unrecorded:  # the plan failed, and PostgreSQL with it
        _record_later(unrecorded)
        raise
    plan, token = started.plan, started.token
    try:
        log.info("trend run planned", extra={"run_id": plan.run_id, "dois": plan.dois, "chunks": len(plan.chunks)})
        errback = trend_failed.s(plan.run_id, duration_name, token).set(queue=queue)
        callback = finalize_trend.s(plan.run_id, duration_name, plan.now_ns, token).set(queue=queue).on_error(errback)
        if not plan.chunks:  # nothing qualifies: the duration's rows become empty, atomically
            callback.delay([])
        else:
            chord(compute_chunk.s(plan.run_id, duration_name, plan.now_ns, dois, token).set(queue=queue)
                  .on_error(errback) for dois in plan.chunks)(callback)
    except Exception as error:
        _fail(duration_name, plan.run_id, token, f"chord not launched: {failure_reason(error)}")
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


def _fail(duration_name: str, run_id: str, token: str, reason: str) -> None:
    try:
        for_process().trend_runs.fail(_duration(duration_name), run_id, token, reason)
    except FailureNotRecorded as unrecorded:
        _record_later(unrecorded)


@app.task(name=names.TREND_FAILED)
def trend_failed(request: Any, exc: BaseException, traceback: str, run_id: str, duration_name: str,
                 token: str) -> None:
    """Errback of every chunk and of the finalize: the run fails now; old rows stay.

    Called again when the chord ends (``ChordError``) after a chunk failed it: then the run
    is no longer running and its lease no longer has this token, so nothing happens."""
    _fail(duration_name, run_id, token, failure_reason(exc))


@app.task(name=names.RECORD_RUN_FAILURE, bind=True, autoretry_for=(FailureNotRecorded,),
          max_retries=RECORD_RETRIES, retry_backoff=1, retry_backoff_max=5, retry_jitter=False)
def record_run_failure(self: Task[Any, Any], duration_name: str, run_id: str, reason: str) -> None:
    """A failure PostgreSQL did not take when it happened, written as soon as it answers."""
    for_process().trend_runs.record_failure(duration_name, run_id, reason)
