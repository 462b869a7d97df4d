"""PostgreSQL event store: runs everywhere (tests, the local stack, small deployments).

Writes go through a binary COPY into a temporary staging table and one ``INSERT … ON
CONFLICT DO NOTHING``: COPY is the fastest bulk path (85k rows/s here against 2k/s for
row-by-row inserts), and the conflict clause makes a redelivered batch (or an event repeated
within one) a no-op. Times travel as integer
microseconds and are turned into ``timestamptz`` by PostgreSQL, so no float rounding can
shift an event.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg2
from msgspec.structs import astuple
from psycopg2.extensions import connection as Connection

from worker.db.connection import connect
from worker.durations import Duration
from worker.events import POINT_FIELDS, Point
from worker.store import alignment
from worker.store.base import Aggregates, StoreRejected, StoreUnavailable, TrendRow

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)

_COLUMNS = ("event_id", "doi", "time_us", *POINT_FIELDS)
# Staging types equal the table's (a bigint staged as a double would lose digits above 2**53),
# with the struct code of each in COPY's binary format.
_INTEGERS = {"followers": ("bigint", "q"), "length": ("integer", "i"), "questions": ("integer", "i"),
             "exclamations": ("integer", "i")}
_TYPES = {"time_us": ("bigint", "q")} | {name: _INTEGERS.get(name, ("double precision", "d")) for name in POINT_FIELDS}
_STAGING = f"""
CREATE TEMPORARY TABLE IF NOT EXISTS event_staging (
    event_id text, doi text, {", ".join(f"{name} {sql}" for name, (sql, _) in _TYPES.items())}
) ON COMMIT DELETE ROWS
"""
# ORDER BY event_id: every batch takes the unique index's locks in the same order, so two
# batches sharing event ids (a re-published batch beside the original) cannot deadlock.
_MERGE = f"""
INSERT INTO discussion_event (event_id, doi, time, {", ".join(POINT_FIELDS)})
SELECT event_id, doi,
       to_timestamp(0) + time_us * interval '1 microsecond', {", ".join(POINT_FIELDS)}
FROM event_staging
ORDER BY event_id
ON CONFLICT (event_id) DO NOTHING
"""
# Points that reuse a stored event's id with other content (run only when some point was not
# inserted: a redelivery repeats the same content and is no conflict).
_CONFLICTS = f"""
SELECT s.event_id FROM event_staging s JOIN discussion_event e USING (event_id)
WHERE (s.doi, to_timestamp(0) + s.time_us * interval '1 microsecond', {", ".join(f"s.{f}" for f in POINT_FIELDS)})
      IS DISTINCT FROM (e.doi, e.time, {", ".join(f"e.{f}" for f in POINT_FIELDS)})
ORDER BY s.event_id LIMIT 1000
"""

# SQLSTATE classes (PostgreSQL appendix A). psycopg2 maps "index row requires N bytes"
# (54000) and deadlocks (40P01) to subclasses of OperationalError, so classes decide, not
# exception types.
_CONFLICT_STATES = {"40001", "40P01"}  # serialization failure, deadlock: retry at once
_DATA_CLASSES = {"22", "23", "54"}  # data exception, integrity violation, program limit: the data
_CONFLICT_RETRIES = 5
_COPY = f"COPY event_staging ({', '.join(_COLUMNS)}) FROM STDIN (FORMAT binary)"
_US = "1000"


# COPY's binary format: a fixed header, then per row the field count and each field as
# (int32 length, bytes); doubles and bigints in network byte order; a -1 trailer.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)
_ROW_START = struct.Struct(">hi")  # field count, length of event_id
_LENGTH = struct.Struct(">i")
# time_us and the measures, each as (length, value): the lengths are fixed, the values
# are filled into a copy of this template per row.
_ROW_TAIL = struct.Struct(">" + "".join(f"i{code}" for _, code in _TYPES.values()))
_TAIL_TEMPLATE: list[int] = [n for _, code in _TYPES.values() for n in (struct.calcsize(">" + code), 0)]


def _copy_buffer(points: Sequence[Point]) -> io.BytesIO:
    """The batch in COPY's binary format.

    Binary, not text: nothing to escape, and no float goes through repr() in Python and
    float8in() in PostgreSQL — under 2 µs per event here against 4.7 µs for the text
    format, and less work for the server as well.
    """
    parts = [_COPY_HEADER]
    append = parts.append
    for t in map(astuple, points):
        event_id, doi = t[0].encode(), t[1].encode()
        append(_ROW_START.pack(len(_COLUMNS), len(event_id)))
        append(event_id)
        append(_LENGTH.pack(len(doi)))
        append(doi)
        row = _TAIL_TEMPLATE.copy()
        row[1::2] = (t[2] // 1000, *t[3:])
        append(_ROW_TAIL.pack(*row))
    append(_COPY_TRAILER)
    return io.BytesIO(b"".join(parts))


def _ns_to_ts_sql(param: str) -> str:
    return f"to_timestamp(0) + ({param}::bigint / {_US}) * interval '1 microsecond'"


# Aggregates field -> SQL expression over the events of the span (`ev`).
_SUMS = {
    "count": "count(*)",
    "sum_score": "sum(score)",
    # exp() raises on underflow in PostgreSQL; below e^-700 a weight is 0 in float64 anyway.
    "decayed_score": "sum(score * exp(greatest(%(g)s * age, -700)))",
    "sum_age": "sum(age)",
    "sum_sentiment": "sum(sentiment_raw)",
    "sum_followers": "sum(followers)",
    "sum_abstract": "sum(contains_abstract_raw)",
    "sum_length": "sum(length)",
    "sum_questions": "sum(questions)",
    "sum_exclamations": "sum(exclamations)",
    "sum_bot_rating": "sum(bot_rating)",
}
# The events of the span, at their whole second (worker.store.alignment): the range is on
# the stored time, [now - span, now + 1 s), which the (doi, time) index serves; the age is
# a whole number of seconds, so the window is an integer division, exact at every edge.
_SPAN_EVENTS = f"""
    WITH ev AS (
        SELECT doi, score, sentiment_raw, followers, contains_abstract_raw, length, questions,
               exclamations, bot_rating,
               extract(epoch FROM {_ns_to_ts_sql("%(now)s")} - date_trunc('second', time))::bigint AS age
        FROM discussion_event
        WHERE doi = ANY(%(dois)s)
          AND time >= {_ns_to_ts_sql("%(start)s")}
          AND time < {_ns_to_ts_sql("%(stop)s")}
    )
"""
_SCORE = list(_SUMS).index("sum_score")
_TREND_WINDOWS = _SPAN_EVENTS + f"""
    SELECT doi, (age / %(w)s)::int AS k, {', '.join(f'({e})::float8' for e in _SUMS.values())}
    FROM ev GROUP BY doi, k
"""


class _Refused(Exception):
    """PostgreSQL (or the binary encoding for it) refused a chunk as data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def classify(error: psycopg2.Error) -> str:
    """"conflict" (retry now), "data" (bisect and dead-letter) or "unavailable" (wait)."""
    state = error.pgcode or ""
    if state in _CONFLICT_STATES:
        return "conflict"
    if state[:2] in _DATA_CLASSES:
        return "data"
    return "unavailable"


class PostgresStore:
    """Event store on the ``discussion_event`` table created by the migrations."""

    name = "postgres"

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: Connection | None = None
        self.conflict_retries = 0  # deadlocks / serialization failures retried (should stay 0)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        return cls(settings.postgres_dsn.get_secret_value())

    # -- connection handling: one connection per process, reopened after a failure -------
    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self._dsn, application_name="aggregator-store")
            except psycopg2.OperationalError as error:
                raise StoreUnavailable(f"PostgreSQL unreachable: {error}".strip()) from error
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def setup(self) -> None:
        from worker.db.migrate import migrate

        migrate(self._dsn)

    def write(self, points: Sequence[Point]) -> int:
        """Store the points (idempotent); returns how many reused a stored id with other content.

        Raises :class:`StoreUnavailable` when PostgreSQL cannot be reached (or keeps
        deadlocking), and :class:`StoreRejected` with exactly the points it refused as data
        (after writing all the others), so one bad point never costs the batch.
        """
        if not points:
            return 0
        rejected: list[Point] = []
        reasons: list[str] = []
        conflicts = 0
        pending = [points]
        while pending:
            chunk = pending.pop()
            try:
                conflicts += self._write_chunk(chunk)
            except _Refused as refusal:
                # Bisect to the refused points: log2(batch) extra round trips per bad point.
                if len(chunk) == 1:
                    rejected.append(chunk[0])
                    reasons.append(refusal.reason)
                else:
                    middle = len(chunk) // 2
                    pending += [chunk[middle:], chunk[:middle]]
        if rejected:
            raise StoreRejected(f"PostgreSQL refused {len(rejected)} point(s): {reasons[0]}", rejected, conflicts)
        return conflicts

    def _write_chunk(self, points: Sequence[Point]) -> int:
        try:
            buffer = _copy_buffer(points)
        except (struct.error, UnicodeEncodeError) as error:  # a value outside its column's type
            raise _Refused(f"not representable: {error}") from error
        for attempt in range(_CONFLICT_RETRIES + 1):
            conn = self._connection()
            buffer.seek(0)
            try:
                with conn, conn.cursor() as cur:
                    cur.execute(_STAGING)
                    cur.copy_expert(_COPY, buffer)
                    cur.execute(_MERGE)
                    if cur.rowcount == len(points):
                        return 0
                    cur.execute(_CONFLICTS)
                    clashing = [event_id for (event_id,) in cur.fetchall()]
                if clashing:
                    log.warning("events reuse a stored id with other content; the stored ones are kept", extra={
                        "conflicts": len(clashing), "event_ids": ",".join(clashing[:5])})
                return len(clashing)
            except psycopg2.Error as error:
                kind = classify(error)
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                if kind == "data":
                    raise _Refused(reason) from error
                if kind == "conflict" and attempt < _CONFLICT_RETRIES:
                    self.conflict_retries += 1
                    log.info("write conflict, trying again", extra={"sqlstate": error.pgcode, "attempt": attempt + 1})
                    time.sleep(random.uniform(0, 0.05 * 2**attempt))  # jitter: let the other transaction finish
                    continue
                if conn.closed or kind != "conflict":
                    self._drop_connection()
                raise StoreUnavailable(f"PostgreSQL write failed ({error.pgcode or 'connection'}): {reason}") from error
        raise AssertionError("unreachable")

    def read_events(self, doi: str, start_ns: int, stop_ns: int) -> list[Point]:
        sql = f"""
            SELECT event_id, doi,
                   (extract(epoch FROM time - to_timestamp(0)) * 1000000)::bigint * 1000,
                   {", ".join(POINT_FIELDS)}
            FROM discussion_event
            WHERE doi = %s AND time >= {_ns_to_ts_sql("%s")} AND time < {_ns_to_ts_sql("%s")}
            ORDER BY time, event_id
        """
        rows = self._query(sql, (doi, start_ns, stop_ns))
        return [Point(*row) for row in rows]

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        sql = f"""
            SELECT doi, count(*) FROM discussion_event
            WHERE time >= {_ns_to_ts_sql("%s")} AND time < {_ns_to_ts_sql("%s")}
            GROUP BY doi
        """
        return {doi: int(n) for doi, n in self._query(sql, (start_ns, stop_ns))}

    # -- trend inputs: aggregation pushed down to PostgreSQL ---------------------------------
    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        """DOIs with more than ``min_events`` events in the span (``alignment.span_range``), sorted."""
        start, stop = alignment.span_range(duration, now_ns)
        sql = f"""
            SELECT doi FROM discussion_event
            WHERE time >= {_ns_to_ts_sql("%(start)s")} AND time < {_ns_to_ts_sql("%(stop)s")}
            GROUP BY doi HAVING count(*) > %(min)s ORDER BY doi
        """
        rows = self._query(sql, {"start": start, "stop": stop, "min": duration.min_events})
        return [doi for (doi,) in rows]

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        """Per-DOI sums, decayed score and window series from ONE ``GROUP BY doi, window``.

        Only (DOIs x windows) partial sums leave the database, not every event; the per-DOI
        sums are their totals, the series their score column. Window k counts the whole-second
        ages in [k*w, (k+1)*w) back from now (``worker.store.alignment``), i.e. series
        position ``windows - 1 - k``, exactly as :func:`worker.trends.math.window_series`;
        events older than the series (k >= windows) still count in the sums.
        """
        index = {doi: i for i, doi in enumerate(dois)}
        if len(index) != len(dois):
            raise ValueError("trend_inputs: duplicate DOIs in the chunk")
        n, windows = len(dois), duration.windows
        sums = np.zeros((n, len(_SUMS)))
        series = np.zeros((n, windows))
        start, stop = alignment.span_range(duration, now_ns)
        if n:
            params = {"now": now_ns, "start": start, "stop": stop, "dois": list(dois), "g": duration.gravity,
                      "w": duration.window_s}
            found = self._query(_TREND_WINDOWS, params)
            if found:
                rows_doi = np.fromiter((index[r[0]] for r in found), dtype=np.int64, count=len(found))
                rows_k = np.fromiter((r[1] for r in found), dtype=np.int64, count=len(found))
                values = np.array([r[2:] for r in found], dtype=np.float64)
                np.add.at(sums, rows_doi, values)
                inside = rows_k < windows
                series[rows_doi[inside], windows - 1 - rows_k[inside]] = values[inside, _SCORE]
        return Aggregates(**{name: sums[:, i].copy() for i, name in enumerate(_SUMS)}, series=series)

    def write_trend_history(self, duration: str, calculated_at_ns: int, rows: Sequence[TrendRow]) -> None:
        """Nothing to do: the finalize step appends the run to ``trending_history`` in this
        same database, in the transaction that publishes it."""

    def _query(self, sql: str, params: tuple[object, ...] | dict[str, object]) -> list[tuple[Any, ...]]:
        conn = self._connection()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as error:
            self._drop_connection()
            raise StoreUnavailable(f"PostgreSQL query failed: {error}".strip()) from error

    def close(self) -> None:
        self._drop_connection()
