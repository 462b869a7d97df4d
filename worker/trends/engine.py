"""One trend run, as steps shared by the Celery tasks and `aggregator trends run`.

plan (select qualifying DOIs, split into chunks) -> compute one chunk (store query + math +
staging) per subtask -> finalize (atomic replacement, history, view refresh). Each step is
a function of (settings, store, ...) so the CLI runs the same code the chord runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from worker.durations import Duration
from worker.settings import Settings
from worker.store import alignment
from worker.store.base import EventStore
from worker.trends import publish
from worker.trends.math import compute_trends, rows

log = logging.getLogger(__name__)


@dataclass
class Plan:
    run_id: str
    duration: str
    now_ns: int
    chunks: list[list[str]]

    @property
    def dois(self) -> int:
        return sum(len(c) for c in self.chunks)


def ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).replace(microsecond=(ns // 1000) % 1_000_000)


def datetime_to_ns(at: datetime) -> int:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000


def run_time_ns(at: str | datetime | None = None) -> int:
    """A run's ``now``: ``at`` (ISO 8601 text or a datetime, UTC when it has no offset) or the
    current time, floored to a whole second, the resolution every store computes trends at
    (:mod:`worker.store.alignment`)."""
    moment = datetime.fromisoformat(at) if isinstance(at, str) else at or datetime.now(UTC)
    return alignment.run_time_ns(datetime_to_ns(moment))


def chunked(items: Sequence[str], size: int) -> list[list[str]]:
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


def new_run_id(duration: str, now_ns: int, token: str) -> str:
    return f"{duration}:{ns_to_datetime(now_ns):%Y%m%dT%H%M%S}Z:{token[:8]}"


def new_token() -> str:
    return uuid.uuid4().hex


def plan_run(settings: Settings, store: EventStore, duration: Duration, now_ns: int, token: str) -> Plan:
    run_id = new_run_id(duration.name, now_ns, token)
    publish.start_run(settings.postgres_dsn.get_secret_value(), run_id, duration.name, ns_to_datetime(now_ns))
    dois = store.qualifying_dois(duration, now_ns)
    plan = Plan(run_id, duration.name, now_ns, chunked(dois, settings.trend_chunk_size))
    publish.record_plan(settings.postgres_dsn.get_secret_value(), run_id, plan.dois, len(plan.chunks))
    return plan


def compute_chunk(settings: Settings, store: EventStore, duration: Duration, run_id: str, now_ns: int,
                  dois: list[str]) -> int:
    """Trend rows of one chunk, staged in PostgreSQL; returns the row count (a small result)."""
    aggregates = store.trend_inputs(duration, now_ns, dois)
    trend_rows = rows(dois, compute_trends(aggregates, duration))
    return publish.stage_rows(settings.postgres_dsn.get_secret_value(), run_id, trend_rows)


def finalize_run(settings: Settings, store: EventStore, run_id: str, duration: str, now_ns: int) -> dict[str, object]:
    timings: dict[str, float] = {}
    started = time.perf_counter()
    result = publish.finalize(settings.postgres_dsn.get_secret_value(), run_id, duration, ns_to_datetime(now_ns))
    timings["finalize_s"] = time.perf_counter() - started
    if result.status == "finalized":
        dsn = settings.postgres_dsn.get_secret_value()
        if store.keeps_trend_history:
            try:  # InfluxDB keeps the rows the streams API charts (trending_<duration>), as the source did
                store.write_trend_history(duration, now_ns, publish.run_rows(dsn, duration, run_id))
            except Exception as error:  # the PostgreSQL history is the record; log and go on
                log.error("store trend history not written", extra={"run_id": run_id, "error": str(error)})
        started = time.perf_counter()
        publish.refresh_covid_view(dsn, run_id)
        timings["view_refresh_s"] = time.perf_counter() - started
    return {"run_id": run_id, "status": result.status, "rows": result.rows,
            "without_publication": result.without_publication,
            "duplicate_publication": result.duplicate_publication, **timings}
