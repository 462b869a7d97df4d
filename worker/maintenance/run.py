"""One maintenance run: carry out :func:`worker.core.retention.plan` on PostgreSQL.

Shared by the beat task and ``aggregator maintain``; one run at a time (an advisory lock).
A step that cannot get its lock is retried twice, then left for the next run; thinning
stops starting after ``budget_s`` (docs/operating.md, "Operating for years").
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any

from psycopg2 import errors
from psycopg2.extensions import connection as Connection

from worker.core.failures import TryLater
from worker.core.partitions import EVENTS, HISTORY, Layout, Range
from worker.core.retention import HistoryDay, Level, Plan, RetentionPolicy, plan
from worker.db import partition_admin
from worker.db.connection import Database
from worker.maintenance.thinning import kept_rows
from worker.store.postgres import rollup

log = logging.getLogger(__name__)

_LOCK_KEY = "aggregator.maintenance"
_ATTEMPTS = 3
_PAUSE_S = 1.0
_PRUNE_RUNS = "DELETE FROM trend_run WHERE calculated_at < %s"
# The triage log of letters last handled before the events' cutoff (their events are past
# retention, the letters long gone from the topic); a letter's rows go all together.
_PRUNE_TRIAGE = """
    DELETE FROM dead_letter_triage t
    USING (SELECT topic, kafka_partition, kafka_offset FROM dead_letter_triage
           GROUP BY topic, kafka_partition, kafka_offset HAVING max(at) < %s) old
    WHERE t.topic = old.topic AND t.kafka_partition = old.kafka_partition
      AND t.kafka_offset = old.kafka_offset"""


class MaintenanceInFlight(TryLater):
    """Another maintenance run holds the lock."""


@dataclass
class Step:
    action: str  # "create", "drop", "roll up", "thin hourly", "thin daily", "prune <table>"
    target: str
    seconds: float
    done: bool
    detail: str = ""


@dataclass
class Report:
    at: datetime
    plan: Plan
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    on_step: Callable[[Step], object] | None = field(default=None, repr=False, compare=False)

    def add(self, step: Step) -> None:
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    @property
    def skipped(self) -> list[Step]:
        return [step for step in self.steps if not step.done]

    def summary(self) -> dict[str, object]:
        """Counts per action, for the task's result and its log line."""
        counts = Counter(step.action.replace(" ", "_") + ("" if step.done else "_skipped") for step in self.steps)
        return {"at": self.at.isoformat(), "seconds": round(self.seconds, 3), **counts}


def history_days(cur: Any) -> list[HistoryDay]:
    """The history partitions with the level each was thinned to."""
    cur.execute("SELECT day, level FROM trending_history_compaction")
    levels = {day: Level[level.upper()] for day, level in cur.fetchall()}
    return [HistoryDay(p.range, levels.get(p.range.start.date(), Level.FULL))
            for p in partition_admin.attached(cur, HISTORY)]


def maintain(database: Database, policy: RetentionPolicy, now: datetime, *, dry_run: bool = False,
             budget_s: float | None = None, on_step: Callable[[Step], object] | None = None) -> Report:
    """Plan at ``now`` and (unless ``dry_run``) carry the plan out; ``on_step`` hears of each
    step as it ends (thinning a backlog takes minutes: the command shows them as they go)."""
    started = time.perf_counter()
    conn = database.connect(application_name="aggregator-maintenance", autocommit=True)
    try:
        with _exclusive(conn), conn.cursor() as cur:
            events = partition_admin.attached(cur, EVENTS)
            history = history_days(cur)
            todo = plan(policy, now, [p.range for p in events], history)
            report = Report(now, todo, on_step=on_step)
            if not dry_run:
                _carry_out(conn, policy, now, todo, events, budget_s, started, report)
    finally:
        conn.close()
    report.seconds = time.perf_counter() - started
    if not dry_run:
        log.info("maintenance done", extra=report.summary())
    return report


@contextmanager
def _exclusive(conn: Connection) -> Iterator[None]:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (_LOCK_KEY,))
        row = cur.fetchone()
        if not (row and row[0]):
            raise MaintenanceInFlight("another maintenance run is in flight; not starting a second one",
                                      "Wait for it to finish, then run again.")
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", (_LOCK_KEY,))


def _carry_out(conn: Connection, policy: RetentionPolicy, now: datetime, todo: Plan,
               events: list[partition_admin.Partition], budget_s: float | None, started: float,
               report: Report) -> None:
    by_range = {p.range: p for p in events}
    with conn.cursor() as cur:
        history = {p.range: p for p in partition_admin.attached(cur, HISTORY)}

    for layout, create, drop, existing in ((EVENTS, todo.create_events, todo.drop_events, by_range),
                                           (HISTORY, todo.create_history, todo.drop_history, history)):
        if create:
            _step(report, "create", f"{layout.table} x{len(create)}", partial(_create, conn, layout, create))
        for part in drop:
            _step(report, "drop", existing[part].name, partial(_drop, conn, layout, existing[part]))
    _drop_leftovers(conn, policy, now, report)
    _step(report, "prune event_rollup_day", "event_rollup_day", partial(_prune_rollup, conn))
    _step(report, "roll up", "event_rollup_day", partial(_roll_up, conn, now, budget_s, started))
    for day, level in todo.thin_history:
        action, target = f"thin {level.name.lower()}", history[day]
        if budget_s is not None and time.perf_counter() - started > budget_s:
            report.add(Step(action, target.name, 0.0, False, "budget spent"))
        else:
            _step(report, action, target.name, partial(_thin, conn, target, level))
    _step(report, "prune trend_run", "trend_run",
          partial(_delete, conn, _PRUNE_RUNS, now - timedelta(days=policy.history_retention_days)))
    _step(report, "prune dead_letter_triage", "dead_letter_triage",
          partial(_delete, conn, _PRUNE_TRIAGE, policy.event_cutoff(now)))


def _step(report: Report, action: str, target: str, run: Callable[[], str]) -> None:
    for attempt in range(1, _ATTEMPTS + 1):
        started = time.perf_counter()
        try:
            detail = run()
        except (errors.LockNotAvailable, errors.DeadlockDetected) as error:
            if attempt < _ATTEMPTS:
                time.sleep(_PAUSE_S * attempt)
                continue
            report.add(Step(action, target, time.perf_counter() - started, False,
                                     f"lock not obtained ({error.pgcode}); left for the next run"))
            log.warning("maintenance step postponed: lock not obtained",
                        extra={"action": action, "target": target, "sqlstate": error.pgcode})
            return
        report.add(Step(action, target, time.perf_counter() - started, True, detail))
        log.debug("maintenance step", extra={"action": action, "target": target, "detail": detail,
                                            "seconds": round(time.perf_counter() - started, 3)})
        return


@contextmanager
def _in_transactions(conn: Connection) -> Iterator[None]:
    conn.autocommit = False
    try:
        yield
    finally:
        conn.autocommit = True


def _create(conn: Connection, layout: Layout, ranges: list[Range]) -> str:
    with _in_transactions(conn):
        return f"{len(partition_admin.ensure(conn, layout, ranges))} created"


def _drop(conn: Connection, layout: Layout, part: partition_admin.Partition) -> str:
    partition_admin.detach_and_drop(conn, layout, part)
    if layout is HISTORY:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM trending_history_compaction WHERE day = %s", (part.range.start.date(),))
    return f"{part.range.start:%Y-%m-%d}..{part.range.stop:%Y-%m-%d}"


def _prune_rollup(conn: Connection) -> str:
    """The rollup's days that no events partition holds any more (dropped above, or earlier)."""
    with conn.cursor() as cur:
        kept = partition_admin.attached(cur, EVENTS)
        oldest = kept[0].range.start.date() if kept else date.max
        deleted = 0
        for statement in rollup.PRUNE:
            cur.execute(statement, (oldest,))
            deleted += cur.rowcount
    return f"{deleted} deleted"


def _roll_up(conn: Connection, now: datetime, budget_s: float | None, started: float) -> str:
    """The marked days that have ended, newest month first, while the budget lasts."""
    with _in_transactions(conn):
        done = rollup.roll_up(conn, now.date(), deadline=None if budget_s is None else started + budget_s)
    return f"{sum(r.days for r in done)} days, {sum(r.rows for r in done)} rows" if done else "up to date"


def _drop_leftovers(conn: Connection, policy: RetentionPolicy, now: datetime, report: Report) -> None:
    """Tables of product partitions detached but not dropped (a run stopped in between)."""
    with conn.cursor() as cur:
        expired = [p for p in partition_admin.detached(cur, EVENTS) if p.range.stop <= policy.event_cutoff(now)]
        expired += [p for p in partition_admin.detached(cur, HISTORY) if policy.history_level(p.range, now) is None]
    for part in expired:
        _step(report, "drop", part.name, partial(_drop_detached, conn, part))


def _drop_detached(conn: Connection, part: partition_admin.Partition) -> str:
    partition_admin.drop_detached(conn, part)
    return "detached leftover"


def _thin(conn: Connection, part: partition_admin.Partition, level: Level) -> str:
    def record(cur: Any, result: partition_admin.SwapResult) -> None:
        # In the swap's transaction: the level is recorded exactly when the rows are thinned.
        cur.execute("INSERT INTO trending_history_compaction (day, level, rows_before, rows_after) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (day) DO UPDATE SET level = EXCLUDED.level, "
                    "rows_before = EXCLUDED.rows_before, rows_after = EXCLUDED.rows_after, compacted_at = now()",
                    (part.range.start.date(), level.name.lower(), result.rows_before, result.rows_after))

    with _in_transactions(conn):
        result = partition_admin.swap_thinned(conn, HISTORY, part, kept_rows(level), on_swap=record)
    if not result.swapped:
        return "rows arrived meanwhile; left for the next run"
    return f"{result.rows_before} -> {result.rows_after} rows"


def _delete(conn: Connection, statement: str, cutoff: datetime) -> str:
    with conn.cursor() as cur:
        cur.execute(statement, (cutoff,))
        return f"{cur.rowcount} deleted"
