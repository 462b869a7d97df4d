"""A trend run's lifecycle, once, for the Celery chord and `aggregator trends run` alike.

    begin     take the duration's lease, give up runs that lost theirs, plan the chunks
    chunk     renew the lease, compute and stage one chunk (skipped if the run was given up)
    finish    renew the lease, publish atomically, release the lease
    fail      release the lease, mark the run failed (current rows stay), in any phase

A killed worker's run stops renewing its lease and is given up by the next run of the
duration (docs/trends.md, "A killed trends worker" and "How a run fails").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from worker.core.durations import Duration
from worker.core.failures import TryLater, first_line
from worker.store.base import EventStore
from worker.trends import metrics
from worker.trends.lease import Leases
from worker.trends.math import compute_trends, rows
from worker.trends.planning import Plan, chunked, new_run_id, new_token, ns_to_datetime, token_holder
from worker.trends.state import PostgresRunState

log = logging.getLogger(__name__)


class RunInFlight(TryLater):
    """Another run of the duration holds the lease: try again when it is done."""


class FailureNotRecorded(Exception):
    """A run failed, its lease is released, but PostgreSQL did not take the mark ``failed``:
    the caller records it again when PostgreSQL answers (:meth:`TrendRuns.record_failure`)."""

    def __init__(self, duration: str, run_id: str, reason: str) -> None:
        super().__init__(f"run {run_id} failed ({reason}); not yet recorded: PostgreSQL did not answer")
        self.duration = duration
        self.run_id = run_id
        self.reason = reason


@dataclass
class Started:
    plan: Plan
    token: str
    abandoned: list[str]


class RunSteps:
    """The three steps of a run without the lease (benchmarks drive them directly); holds
    no connection of its own."""

    def __init__(self, store: EventStore, state: PostgresRunState, *, chunk_size: int) -> None:
        self.store = store
        self.state = state
        self.chunk_size = chunk_size

    def plan(self, duration: Duration, now_ns: int, token: str) -> Plan:
        run_id = new_run_id(duration.name, now_ns, token)
        self.state.start(run_id, duration, ns_to_datetime(now_ns))
        dois = self.store.qualifying_dois(duration, now_ns)
        plan = Plan(run_id, duration.name, now_ns, chunked(dois, self.chunk_size))
        self.state.record_plan(run_id, plan.dois, len(plan.chunks))
        return plan

    def compute_chunk(self, duration: Duration, run_id: str, now_ns: int, dois: list[str]) -> int:
        """Trend rows of one chunk, staged; returns the row count (a small chord result)."""
        aggregates = self.store.trend_inputs(duration, now_ns, dois)
        trend_rows = rows(dois, compute_trends(aggregates, duration))
        return self.state.stage_rows(run_id, trend_rows)

    def finalize(self, duration: Duration, run_id: str, now_ns: int) -> dict[str, Any]:
        started = time.perf_counter()
        result = self.state.finalize(run_id, duration, ns_to_datetime(now_ns))
        timings = {"finalize_s": time.perf_counter() - started}
        if result.status == "finalized":
            if self.store.keeps_trend_history:
                try:  # InfluxDB keeps the rows the streams API charts (trending_<duration>), as the source did
                    self.store.write_trend_history(duration.name, now_ns, self.state.run_rows(duration, run_id))
                except Exception as error:  # the PostgreSQL history is the record; log and go on
                    log.error("store trend history not written", extra={"run_id": run_id, "error": str(error)})
            started = time.perf_counter()
            self.state.refresh_covid_view(run_id)
            timings["view_refresh_s"] = time.perf_counter() - started
        return {"run_id": run_id, **asdict(result), **timings}


class TrendRuns:
    """:class:`RunSteps` under the duration's lease, built once per process from the settings."""

    def __init__(self, steps: RunSteps, leases: Leases) -> None:
        self.steps = steps
        self.state = steps.state
        self.leases = leases

    def begin(self, duration: Duration, now_ns: int, holder: str | None = None) -> Started:
        """Take the lease and plan the run; :class:`RunInFlight` when a live run holds it.

        ``holder``, the worker node running it, is written into the lease's token, so the
        node's next incarnation can give the lease up at once (:func:`recover_leases`)."""
        lock = self.leases.of(duration.name)
        token = new_token(holder)
        run_id = new_run_id(duration.name, now_ns, token)  # the id RunSteps.plan gives the run
        if not lock.acquire(token):
            raise RunInFlight(f"a run of {duration.name} is in flight (lease held by {lock.holder()}); not "
                              "starting another", "Wait for it to finish (or its lease, TREND_LOCK_TTL_S, to "
                                                  "expire), then run again.")
        try:
            abandoned = self.state.abandon_runs(duration)
            if abandoned:
                log.warning("earlier runs lost their lease and were given up", extra={
                    "duration": duration.name, "runs": ",".join(abandoned)})
            plan = self.steps.plan(duration, now_ns, token)
        except BaseException as error:
            self.fail(duration, run_id, token, failure_reason(error))
            raise
        return Started(plan, token, abandoned)

    def chunk(self, duration: Duration, run_id: str, now_ns: int, dois: list[str], token: str) -> int:
        """Compute and stage one chunk; 0 without work when the run was given up meanwhile."""
        if not self.state.is_running(run_id):
            log.warning("chunk of a run that is no longer running; skipped", extra={"run_id": run_id})
            return 0
        if not self.leases.of(duration.name).renew(token):
            log.warning("lease lost while computing; the run goes on unless a newer one gave it up",
                        extra={"run_id": run_id})
        return self.steps.compute_chunk(duration, run_id, now_ns, dois)

    def finish(self, duration: Duration, run_id: str, now_ns: int, token: str) -> dict[str, Any]:
        lock = self.leases.of(duration.name)
        lock.renew(token)
        try:
            return self.steps.finalize(duration, run_id, now_ns)
        finally:
            lock.release(token)

    def fail(self, duration: Duration, run_id: str, token: str, error: str) -> bool:
        """Release the lease, then mark the run failed; whether this call marked it.

        The lease first, so the duration is free even while PostgreSQL does not answer;
        :class:`FailureNotRecorded` only from the call that held the lease: a later report
        of the same run must not write its reason over the first one's."""
        try:
            released = self.leases.of(duration.name).release(token)
        except Exception as redis_error:  # the lease expires by itself (TREND_LOCK_TTL_S)
            log.warning("lease of a failed run not released", extra={"run_id": run_id, "error": str(redis_error)})
            released = True  # this call is still the one that reports the failure
        try:
            return self.record_failure(duration.name, run_id, error)
        except FailureNotRecorded:
            if released:
                raise
            return False

    def record_failure(self, duration: str, run_id: str, error: str) -> bool:
        try:
            failed = self.state.fail(run_id, error)
        except Exception as cause:
            raise FailureNotRecorded(duration, run_id, error) from cause
        if failed:
            log.error("trend run failed; current rows kept", extra={"run_id": run_id, "error": error})
            metrics.RUNS_FAILED.labels(duration).inc()
        return failed


def failure_reason(error: BaseException) -> str:
    """What ``trend_run.error`` says: the error's class and first line (a lock or statement
    timeout, PostgreSQL unreachable, a time limit)."""
    kind, message = type(error).__name__, first_line(error)
    return message if message.startswith(kind) else f"{kind}: {message}" if message else kind


def recover_leases(leases: Leases, state: PostgresRunState, durations: Sequence[Duration], node: str) -> list[Duration]:
    """Give up the leases ``node`` held before it (re)started and fail their runs; the
    durations to run again at once.

    A starting node's own lease belongs to its dead previous incarnation; waiting for it to
    expire would stall the duration until its next cron tick (a day, for ``year``).
    """
    recovered = []
    for duration in durations:
        lock = leases.of(duration.name)
        holder = lock.holder()
        if holder is None or token_holder(holder) != node:
            continue
        if lock.release(holder):
            gone = state.abandon_runs(duration)
            log.warning("lease of a dead incarnation of this worker given up; running the duration again",
                        extra={"duration": duration.name, "node": node, "runs": ",".join(gone)})
            recovered.append(duration)
    return recovered
