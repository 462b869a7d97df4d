"""PostgreSQL event store: runs everywhere (tests, the local stack, small deployments).

Writes: a binary COPY into a temporary staging table, then one ``INSERT … ON CONFLICT DO
NOTHING`` (85k rows/s against 2k/s row by row; a redelivered batch is a no-op). Times
travel as integer microseconds, so no float rounding can shift an event. Trend inputs: one
``GROUP BY doi, window`` per chunk, returned as binary COPY (docs/trends.md, "A run").
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import psycopg2
from psycopg2.extensions import connection as Connection

from worker.core import alignment, day_rollup, partitions
from worker.core.aggregates import Aggregates, TrendRow
from worker.core.durations import Duration
from worker.core.events import POINT_FIELDS, Point
from worker.db import partition_admin
from worker.db.connection import DEFAULT_CONNECT_TIMEOUT_S, NO_TIMEOUTS, Database, Timeouts
from worker.db.migrate import migrate
from worker.store.base import StoreRejected, StoreUnavailable
from worker.store.postgres import copy, rollup, trend_sql
from worker.store.postgres.sessions import Sessions

if TYPE_CHECKING:
    from worker.config.settings import Settings

log = logging.getLogger(__name__)

# ORDER BY event_id: batches sharing event ids take the unique index's locks in the same
# order, so they cannot deadlock. The key holds the partition key, time (migration 0005).
_MERGE = f"""
INSERT INTO discussion_event (event_id, doi, time, {", ".join(POINT_FIELDS)})
SELECT event_id, doi,
       to_timestamp(0) + time_us * interval '1 microsecond', {", ".join(POINT_FIELDS)}
FROM event_staging
ORDER BY event_id
ON CONFLICT (event_id, time) DO NOTHING
"""
# Points that reuse a stored event's key with other content (asked only when some point was
# not inserted; a redelivery repeats the same content and is no conflict).
_CONFLICTS = f"""
SELECT s.event_id FROM event_staging s JOIN discussion_event e
  ON e.event_id = s.event_id AND e.time = to_timestamp(0) + s.time_us * interval '1 microsecond'
WHERE (s.doi, to_timestamp(0) + s.time_us * interval '1 microsecond', {", ".join(f"s.{f}" for f in POINT_FIELDS)})
      IS DISTINCT FROM (e.doi, e.time, {", ".join(f"e.{f}" for f in POINT_FIELDS)})
ORDER BY s.event_id LIMIT 1000
"""

# SQLSTATE classes (PostgreSQL appendix A) decide, not exception types: psycopg2 maps
# "index row requires N bytes" (54000) and deadlocks (40P01) to OperationalError.
_CONFLICT_STATES = {"40001", "40P01"}  # serialization failure, deadlock: retry at once
_DATA_CLASSES = {"22", "23", "54"}  # data exception, integrity violation, program limit: the data
_CONFLICT_RETRIES = 5


class _Refused(Exception):
    """PostgreSQL (or the binary encoding for it) refused a chunk as data; the reason."""


def classify(error: psycopg2.Error) -> str:
    """"conflict" (retry now), "data" (bisect and dead-letter) or "unavailable" (wait)."""
    state = error.pgcode or ""
    if state in _CONFLICT_STATES:
        return "conflict"
    if state[:2] in _DATA_CLASSES:
        return "data"
    return "unavailable"


class PostgresStore(Sessions):
    """Event store on the ``discussion_event`` table created by the migrations."""

    name = "postgres"
    keeps_trend_history = False  # trending_history is written by the finalize step itself

    def __init__(self, dsn: str, *, query_connections: int = 1, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 write_timeouts: Timeouts = NO_TIMEOUTS, query_timeouts: Timeouts = NO_TIMEOUTS,
                 rollup_min_events: int | None = None) -> None:
        super().__init__(dsn, slots=query_connections, connect_timeout_s=connect_timeout_s,
                         query_settings=f"{trend_sql.QUERY_SETTINGS}; {query_timeouts.sql()}")
        self._write_timeouts = write_timeouts.sql()
        self._known_partitions: set[str] = set()  # event partitions known to exist
        # None: trend runs read raw events only; else a DOI with at least this many events in
        # the day rollup reads its whole days from it (TREND_ROLLUP_MIN_EVENTS).
        self.rollup_min_events = rollup_min_events

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        database = Database.from_settings(settings)
        return cls(database.dsn, query_connections=settings.trend_query_connections,
                   connect_timeout_s=database.connect_timeout_s,
                   write_timeouts=Timeouts(settings.pg_statement_timeout_ingest_s, settings.pg_lock_timeout_s),
                   query_timeouts=Timeouts(settings.pg_statement_timeout_trends_s, settings.pg_lock_timeout_s),
                   rollup_min_events=settings.trend_rollup_min_events if settings.trend_rollup else None)

    def setup(self) -> None:
        migrate(self._dsn, connect_timeout_s=self._timeout_s)

    def write(self, points: Sequence[Point]) -> int:
        """Store the points (idempotent); returns how many reused a stored id with other content.

        :class:`StoreUnavailable` when PostgreSQL cannot be reached (or keeps deadlocking);
        :class:`StoreRejected` with exactly the points refused as data, after writing all
        the others: the batch is bisected, log2(batch) extra round trips per bad point.
        """
        rejected: list[tuple[Point, str]] = []  # each refused point and PostgreSQL's reason
        conflicts = 0
        pending = [points] if points else []
        while pending:
            chunk = pending.pop()
            try:
                conflicts += self._write_chunk(chunk)
            except _Refused as refusal:
                if len(chunk) == 1:
                    rejected.append((chunk[0], str(refusal)))
                else:
                    middle = len(chunk) // 2
                    pending += [chunk[middle:], chunk[:middle]]
        if rejected:
            raise StoreRejected(f"PostgreSQL refused {len(rejected)} point(s): {rejected[0][1]}",
                                [point for point, _ in rejected], conflicts)
        return conflicts

    def _write_chunk(self, points: Sequence[Point]) -> int:
        try:
            buffer = copy.copy_buffer(points)
        except (struct.error, UnicodeEncodeError) as error:  # a value outside its column's type
            raise _Refused(f"not representable: {error}") from error
        months = partitions.EVENTS.ranges_of_days(partitions.days_of_ns(p.time_ns for p in points))
        for attempt in range(_CONFLICT_RETRIES + 1):
            conn = self._connection()
            buffer.seek(0)
            try:
                self._ensure_partitions(conn, months)
                with conn, conn.cursor() as cur:
                    cur.execute(self._write_timeouts)
                    cur.execute(copy.STAGING)
                    cur.copy_expert(copy.COPY, buffer)
                    cur.execute(_MERGE)
                    inserted = cur.rowcount
                    if inserted:
                        cur.execute(rollup.MARK_STALE)  # the rollup of these days is behind now
                    if inserted == len(points):
                        return 0
                    cur.execute(_CONFLICTS)
                    clashing = [event_id for (event_id,) in cur.fetchall()]
                if clashing:
                    log.warning("events reuse a stored id with other content; the stored ones are kept", extra={
                        "conflicts": len(clashing), "event_ids": ",".join(clashing[:5])})
                return len(clashing)
            except psycopg2.Error as error:
                if (error.pgcode == "23514" and "no partition of relation" in str(error)
                        and attempt < _CONFLICT_RETRIES):
                    # Maintenance dropped a partition this process still knew (an event older
                    # than the retention arrived): look again, create, retry.
                    self._known_partitions.clear()
                    continue
                kind = classify(error)
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                if kind == "data":
                    raise _Refused(reason) from error
                if kind == "conflict" and attempt < _CONFLICT_RETRIES:
                    log.info("write conflict, trying again", extra={"sqlstate": error.pgcode, "attempt": attempt + 1})
                    time.sleep(random.uniform(0, 0.05 * 2**attempt))  # jitter: let the other transaction finish
                    continue
                if conn.closed or kind != "conflict":
                    self._drop_connection()
                raise StoreUnavailable(f"PostgreSQL write failed ({error.pgcode or 'connection'}): {reason}") from error
        raise AssertionError("unreachable")

    def _ensure_partitions(self, conn: Connection, months: list[partitions.Range]) -> None:
        """Create the month partitions a batch needs that this process has not seen yet:
        maintenance creates them ahead, but not for a replay far behind or a clock ahead."""
        missing = [m for m in months if partitions.EVENTS.name(m) not in self._known_partitions]
        if missing:
            partition_admin.ensure(conn, partitions.EVENTS, missing)
            self._known_partitions.update(partitions.EVENTS.name(m) for m in missing)

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        sql = f"""
            SELECT doi, count(*) FROM discussion_event
            WHERE time >= {trend_sql.ns_to_ts("%s")} AND time < {trend_sql.ns_to_ts("%s")}
            GROUP BY doi
        """
        return {doi: int(n) for doi, n in self._query(sql, (start_ns, stop_ns))}

    def _rollup_params(self, duration: Duration, now_ns: int, *, by_window: bool) -> dict[str, object] | None:
        """The day cover's parameters (:mod:`worker.store.postgres.trend_sql`), or None when the
        run reads raw events only (the rollup is off, or cannot serve the duration)."""
        if self.rollup_min_events is None or not day_rollup.serves(duration):
            return None
        cover = day_rollup.cover(duration, now_ns, by_window=by_window)
        if not cover.days:
            return None
        return {"days": cover.days, "ks": cover.windows, "first": cover.days[0], "last": cover.days[-1],
                "lo": [lo for lo, _ in cover.raw], "hi": [hi for _, hi in cover.raw],
                "heavy": self.rollup_min_events,
                **{f"c{j}": c for j, c in enumerate(day_rollup.decay_coefficients(duration.gravity), 1)}}

    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        start, stop = alignment.span_range(duration, now_ns)
        params: dict[str, object] = {"start": start, "stop": stop, "min": duration.min_events}
        cover = self._rollup_params(duration, now_ns, by_window=False)
        with self._transaction() as cur:
            cur.execute(self._query_settings)
            if cover is not None:
                cur.execute(trend_sql.STALE_DAYS, cover)
                [(stale,)] = cur.fetchall()
                if stale > trend_sql.SELECT_STALE_DAYS_MAX:
                    cover = None  # a backfill not rolled up yet: the events are cheaper to read
            if cover is None:
                cur.execute(trend_sql.QUALIFYING, params)
            else:
                cur.execute(trend_sql.QUALIFYING_ROLLUP_SETTINGS)
                cur.execute(trend_sql.QUALIFYING_ROLLUP, params | cover)
            return [doi for (doi,) in cur.fetchall()]

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        """Only DOIs × windows partial sums leave the database (:mod:`.trend_sql`), from
        ``query_connections`` interleaved parts of the chunk at once."""
        if len(set(dois)) != len(dois):
            raise ValueError("trend_inputs: duplicate DOIs in the chunk")
        n, windows = len(dois), duration.windows
        sums = np.zeros((n, len(trend_sql.SUMS)))
        series = np.zeros((n, windows))
        start, stop = alignment.span_range(duration, now_ns)
        cover = self._rollup_params(duration, now_ns, by_window=True)
        sql = trend_sql.TREND_WINDOWS if cover is None else trend_sql.TREND_WINDOWS_ROLLUP
        # Part p holds the DOIs p, p + parts, …, so DOIs sorted by popularity split evenly.
        parts = min(n, self.query_connections)
        params = [{"now_s": now_ns // alignment.NS_PER_S, "start": start, "stop": stop,
                   "dois": list(dois[p::parts]), "g": duration.gravity, "w": duration.window_s, **(cover or {})}
                  for p in range(parts)]
        for p, data in enumerate(self._copy_out_parts(sql, params) if parts else []):
            found = trend_sql.window_rows(data)
            rows_doi = p + (found["i"].astype(np.int64) - 1) * parts  # WITH ORDINALITY counts from 1
            rows_k = found["k"].astype(np.int64)
            # bincount adds in row order, as np.add.at does, at a fifth of its time; a DOI's
            # rows are all in one part, so its sums are the same doubles either way.
            for j in range(len(trend_sql.SUMS)):
                sums[:, j] += np.bincount(rows_doi, weights=found[f"v{j}"].astype(np.float64), minlength=n)
            inside = rows_k < windows  # window k back is position windows - 1 - k; older: sums only
            cells = rows_doi[inside] * windows + windows - 1 - rows_k[inside]
            series += np.bincount(cells, weights=found[f"v{trend_sql.SCORE}"][inside].astype(np.float64),
                                  minlength=n * windows).reshape(n, windows)
        return Aggregates(**{name: sums[:, i].copy() for i, name in enumerate(trend_sql.SUMS)}, series=series)

    def write_trend_history(self, duration: str, calculated_at_ns: int, rows: Sequence[TrendRow]) -> None:
        """Nothing to do: the finalize step appends the run to ``trending_history``."""
