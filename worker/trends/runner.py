"""A trend run's lifecycle, once, for the Celery chord and `aggregator trends run` alike.

    begin    take the duration's lease, give up runs that lost theirs, plan the chunks
    chunk    renew the lease, compute and stage one chunk (skipped if the run was given up)
    finish   renew the lease, publish atomically, release the lease
    fail     mark the run failed (current rows stay), release the lease

Crash recovery lives here: a run whose worker was killed stops renewing its lease; within
``TREND_LOCK_TTL_S`` the lease expires, the next scheduled run of the duration takes it and
marks the dead run failed (its staged rows dropped), and a chunk of the dead run that is
redelivered later finds its run no longer running and does nothing. So a killed trends
worker costs its duration at most one lease, not the hour a long lock did.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import redis

from worker.durations import Duration
from worker.errors import EX_TEMPFAIL, OperatorError
from worker.settings import Settings, get_settings
from worker.store.base import EventStore
from worker.trends import engine, publish
from worker.trends.lock import RunLock

log = logging.getLogger(__name__)


class RunInFlight(OperatorError):
    """Another run of the duration holds the lease: try again when it is done."""

    exit_code = EX_TEMPFAIL


@lru_cache(maxsize=1)
def _client() -> redis.Redis:
    settings = get_settings()
    return redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=settings.connect_timeout_s,
                                socket_connect_timeout=settings.connect_timeout_s)


def run_lock(duration: str, settings: Settings | None = None) -> RunLock:
    settings = settings or get_settings()
    return RunLock(_client(), duration, settings.trend_lock_ttl_s)


@dataclass
class Started:
    plan: engine.Plan
    token: str
    abandoned: list[str]


def begin(settings: Settings, store: EventStore, duration: Duration, now_ns: int) -> Started:
    """Take the lease and plan the run; :class:`RunInFlight` when a live run holds it."""
    lock = run_lock(duration.name, settings)
    token = engine.new_token()
    if not lock.acquire(token):
        raise RunInFlight(f"a run of {duration.name} is in flight (lease held by {lock.holder()}); not starting "
                          "another", "Wait for it to finish (or its lease, TREND_LOCK_TTL_S, to expire), then "
                                     "run again.")
    try:
        dsn = settings.postgres_dsn.get_secret_value()
        abandoned = publish.abandon_runs(dsn, duration.name)
        if abandoned:
            log.warning("earlier runs lost their lease and were given up", extra={
                "duration": duration.name, "runs": ",".join(abandoned)})
        plan = engine.plan_run(settings, store, duration, now_ns, token)
    except BaseException:
        lock.release(token)
        raise
    return Started(plan, token, abandoned)


def chunk(settings: Settings, store: EventStore, duration: Duration, run_id: str, now_ns: int, dois: list[str],
          token: str) -> int:
    """Compute and stage one chunk; 0 without work when the run was given up meanwhile."""
    if not publish.is_running(settings.postgres_dsn.get_secret_value(), run_id):
        log.warning("chunk of a run that is no longer running; skipped", extra={"run_id": run_id})
        return 0
    if not run_lock(duration.name, settings).renew(token):
        log.warning("lease lost while computing; the run goes on unless a newer one gave it up",
                    extra={"run_id": run_id})
    return engine.compute_chunk(settings, store, duration, run_id, now_ns, dois)


def finish(settings: Settings, store: EventStore, run_id: str, duration_name: str, now_ns: int,
           token: str) -> dict[str, Any]:
    lock = run_lock(duration_name, settings)
    lock.renew(token)
    try:
        return engine.finalize_run(settings, store, run_id, duration_name, now_ns)
    finally:
        lock.release(token)


def fail(settings: Settings, run_id: str, duration_name: str, token: str, error: str) -> None:
    try:
        publish.fail_run(settings.postgres_dsn.get_secret_value(), run_id, error)
    finally:
        run_lock(duration_name, settings).release(token)
