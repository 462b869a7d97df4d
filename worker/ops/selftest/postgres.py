"""The self-test's footprint in PostgreSQL, and its removal. One self-test at a time (an
advisory lock); its events share ``discussion_event`` in the year 2000 on the probe's DOIs,
and only the month partitions its write created are dropped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from worker.core import partitions
from worker.core.failures import TryLater, first_line
from worker.db import partition_admin
from worker.db.connection import Connection, Database
from worker.store.postgres import rollup
from worker.trends.math import TREND_COLUMNS

#: The advisory lock of a self-test in flight.
LOCK_KEY = "aggregator.selftest"
#: Run ids of the self-test's staged rows start with this; no trend run's id does (theirs
#: start with the duration's name).
RUN_ID_PREFIX = "selftest:"

_NS = 1_000_000_000
#: Pauses between the attempts to drop a partition (each waits up to the 2 s lock timeout).
_DROP_PAUSES_S: tuple[float | None, ...] = (0.5, 1.0, 2.0, 4.0, None)
_COLUMNS = ", ".join(TREND_COLUMNS)


class SelfTestInFlight(TryLater):
    """Another ``aggregator selftest`` (or a setup running one) holds the lock."""


def _like_prefix(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _one(cur: Any) -> Any:
    row = cur.fetchone()
    return row[0] if row else None


def _drop(conn: Connection, part: partition_admin.Partition) -> str | None:
    """Detach and drop a partition; on a lock timeout (a long trend query still reads the
    table: the detach waits for it) try again a few times. ``None`` when dropped, else why not."""
    for pause in _DROP_PAUSES_S:
        try:
            partition_admin.detach_and_drop(conn, partitions.EVENTS, part)
            return None
        except psycopg2.errors.LockNotAvailable as error:
            if pause is None:
                return first_line(error)
            time.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class ProbeEvents:
    """Where the probe's events are in ``discussion_event`` (when the probe goes to PostgreSQL)."""

    prefix: str
    range_ns: tuple[int, int]
    months: Sequence[partitions.Range]

    @property
    def days(self) -> tuple[date, date]:
        """The first and the last UTC day of the probe's events."""
        start, stop = self.range_ns
        days = partitions.days_of_ns((start, stop - 1))
        return min(days), max(days)


class PostgresScratch:
    """Where the self-test writes in PostgreSQL, and the removal of all of it."""

    def __init__(self, database: Database, events: ProbeEvents | None) -> None:
        self._database = database
        self._events = events
        self._lock: Connection | None = None
        self._partitions_before: set[str] | None = None

    def _connect(self) -> Connection:
        return self._database.connect(application_name="aggregator-selftest", autocommit=True)

    def lock(self) -> None:
        """Take the self-test's lock, or raise :class:`SelfTestInFlight`."""
        self._lock = self._connect()
        with self._lock.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (LOCK_KEY,))
            if not _one(cur):
                self.close()
                raise SelfTestInFlight("another selftest is in flight; not starting a second one",
                                       "Wait for it to finish (a few seconds), then run again.")

    def prepare(self) -> None:
        """Remove what an interrupted earlier self-test (``kill -9``) left (staged rows, probe
        events), and note which event partitions exist before the probe's write creates any."""
        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM trending_staging WHERE run_id LIKE %s", (_like_prefix(RUN_ID_PREFIX),))
            if self._events is not None:
                self._delete_events(cur, self._events)
                self._partitions_before = {p.name for p in partition_admin.attached(cur, partitions.EVENTS)}

    @staticmethod
    def _delete_events(cur: Any, events: ProbeEvents) -> int:
        start, stop = events.range_ns
        cur.execute("DELETE FROM discussion_event WHERE doi LIKE %s AND time >= to_timestamp(%s) "
                    "AND time < to_timestamp(%s)", (_like_prefix(events.prefix), start // _NS, -(-stop // _NS)))
        deleted = int(cur.rowcount)
        first, last = events.days
        cur.execute("DELETE FROM event_rollup_day WHERE doi LIKE %s AND day >= %s AND day <= %s",
                    (_like_prefix(events.prefix), first, last))
        PostgresScratch._unmark(cur, events)
        return deleted

    @staticmethod
    def _unmark(cur: Any, events: ProbeEvents) -> None:
        """The day marks of the probe's days that mark nothing: no event and no rolled-up row
        is left on the day (a mark only sends the runs and the roll-up to the events)."""
        cur.execute("DELETE FROM event_rollup_stale s WHERE day >= %s AND day <= %s "
                    "AND NOT EXISTS (SELECT FROM event_rollup_day r WHERE r.day = s.day) "
                    "AND NOT EXISTS (SELECT FROM discussion_event WHERE time >= s.day::timestamp AT TIME ZONE 'UTC' "
                    "AND time < (s.day + 1)::timestamp AT TIME ZONE 'UTC')", events.days)

    def roll_up(self) -> None:
        """Roll up the probe's days (and whatever else is marked in them), as maintenance would."""
        if self._events is not None:
            first, last = self._events.days
            with closing(self._connect()) as conn:
                rollup.roll_up(conn, last + timedelta(days=1), since=first)

    def staged_rows(self, run: str) -> list[dict[str, Any]]:
        """A run's rows as ``trending_staging`` holds them, by DOI."""
        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute(f"SELECT publication_doi, {_COLUMNS} FROM trending_staging WHERE run_id = %s "
                        "ORDER BY publication_doi", (run,))
            return [{"doi": doi, **dict(zip(TREND_COLUMNS, rest, strict=True))} for doi, *rest in cur.fetchall()]

    def remove(self, runs: Sequence[str]) -> tuple[list[str], list[str]]:
        """Remove the staged rows of ``runs`` and the probe's events, and drop the probe's month
        partitions that did not exist before. Returns what was removed and what could not be, in words."""
        done: list[str] = []
        left: list[str] = []
        with closing(self._connect()) as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM trending_staging WHERE run_id = ANY(%s)", (list(runs),))
            done.append(f"{cur.rowcount} staged rows")
            if self._events is not None:
                done.insert(0, f"{self._delete_events(cur, self._events)} events")
            if self._events is None or self._partitions_before is None:  # the probe was never written
                return done, left
            wanted = {partitions.EVENTS.name(m) for m in self._events.months} - self._partitions_before
            dropped, kept = [], []
            for part in partition_admin.attached(cur, partitions.EVENTS):
                if part.name not in wanted:
                    continue
                cur.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(part.name)))
                if _one(cur):
                    kept.append(part.name)  # something else wrote there meanwhile: not the probe's to drop
                    continue
                reason = _drop(conn, part)
                if reason is None:
                    dropped.append(part.name)
                else:
                    left.append(f"partition {part.name} (empty) not dropped: {reason}; the hourly maintenance "
                                "drops it (it is past the retention)")
        if dropped:
            done.append(f"partition{'s' * (len(dropped) > 1)} {', '.join(dropped)} dropped")
        if kept:
            done.append(f"kept {', '.join(kept)} (holds other events)")
        return done, left

    def close(self) -> None:
        """Release the lock (closing its session does)."""
        if self._lock is not None:
            with contextlib.suppress(psycopg2.Error):
                self._lock.close()
            self._lock = None
