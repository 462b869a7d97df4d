"""A trend run's state in PostgreSQL: staging, atomic replacement, history, view refresh.

Chunks stage their rows in ``trending_staging`` (chord results stay a number, not megabytes
through Redis). The finalize replaces the duration's rows in ONE transaction (readers see
the old set or the new one) unless a newer run was published (``trending_state``, under a
row lock), publishing only rows whose DOI a publication has (docs/trends.md,
"Publications"), then refreshes the view CONCURRENTLY, outside the transaction.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
from psycopg2.extensions import connection as Connection

from worker.config.settings import Settings
from worker.core import partitions
from worker.core.durations import Duration
from worker.core.masking import mask_dsn
from worker.db import partition_admin
from worker.db.connection import (
    DEFAULT_CONNECT_TIMEOUT_S,
    NO_TIMEOUTS,
    Cursor,
    Database,
    ReusedConnection,
    Timeouts,
    connect,
)
from worker.trends.math import TREND_COLUMNS

log = logging.getLogger(__name__)

_COLS = ", ".join(TREND_COLUMNS)


@dataclass
class FinalizeResult:
    status: str  # "finalized", "superseded" or "abandoned"
    rows: int  # published in `trending`
    without_publication: int = 0  # kept out: no publication has the DOI
    duplicate_publication: int = 0  # kept out: another spelling of a publication published in this run


# COPY's text format: a backslash, tab, newline or carriage return in a value is escaped.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_column(values: list[Any]) -> list[str]:
    """One column's values in COPY's text format. Floats as ``repr``, the shortest text that
    reads back as the same double (PostgreSQL 12+ parses it exactly); the trend math never
    yields NaN or an infinity here (``worker.trends.math.compute_trends``), and ``repr`` of
    those would still parse. A column at a time: a call per value took 0.36 s for the 23,000
    rows of a `year` run at 10M events, this 0.29 s."""
    return [value.translate(_COPY_ESCAPES) if isinstance(value, str) else repr(value) for value in values]


def _copy_text(run_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as ``COPY trending_staging (run_id, publication_doi, <TREND_COLUMNS>)`` text."""
    columns = [_copy_column([row[name] for row in rows]) for name in ("doi", *TREND_COLUMNS)]
    run = run_id.translate(_COPY_ESCAPES)
    return "".join(f"{run}\t{line}\n" for line in map("\t".join, zip(*columns, strict=True)))


# `trending.sum_followers` is a bigint (migration 0004); the staged sums are floats.
_PUBLISHED_COLS = ", ".join(
    "least(round(sum_followers), 9e18)::bigint" if column == "sum_followers" else column for column in TREND_COLUMNS)

# One statement: match the staged rows to publications (case-insensitively, preferring the
# exact spelling; the most events win among spellings), publish those in `trending` (emptied
# just before), append all to the history, and count what was kept out and why.
_PUBLISH = f"""
WITH resolved AS (
    SELECT s.*,
           (SELECT p.doi FROM publication p WHERE lower(p.doi) = lower(s.publication_doi)
            ORDER BY p.doi = s.publication_doi DESC, p.doi LIMIT 1) AS publication
    FROM trending_staging s WHERE s.run_id = %(run_id)s
),
published AS (
    INSERT INTO trending (publication_doi, duration, {_COLS}, run_id, calculated_at)
    SELECT DISTINCT ON (publication) publication, %(duration)s, {_PUBLISHED_COLS}, run_id, %(at)s
    FROM resolved WHERE publication IS NOT NULL
    ORDER BY publication, count DESC, publication_doi
    RETURNING 1
),
history AS (
    INSERT INTO trending_history (publication_doi, duration, {_COLS}, run_id, calculated_at)
    SELECT publication_doi, %(duration)s, {_COLS}, run_id, %(at)s FROM resolved
    ON CONFLICT DO NOTHING
),
-- A day the maintenance task already thinned takes rows again (a run computed for a past
-- time): it forgets the day's level, so the next maintenance applies the policy to it again.
rethin AS (
    DELETE FROM trending_history_compaction WHERE day = (%(at)s AT TIME ZONE 'UTC')::date
)
SELECT (SELECT count(*) FROM published),
       (SELECT count(*) FROM resolved WHERE publication IS NULL),
       (SELECT count(*) FROM resolved WHERE publication IS NOT NULL) - (SELECT count(*) FROM published)
"""


#: How long marking a run failed waits for a connection (libpq's least).
_FAIL_CONNECT_TIMEOUT_S = 2.0
#: Staged rows of a finished run are left-overs no finalize reads again: never wait long.
_CLEANUP_LOCK_TIMEOUT = "SET LOCAL lock_timeout = '2s'"


def _drop_staged(conn: Connection, sql: str, params: tuple[object, ...]) -> None:
    """Remove staged rows of finished runs, in a transaction of its own; best effort."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_CLEANUP_LOCK_TIMEOUT)
            cur.execute(sql, params)
    except psycopg2.OperationalError as error:
        log.warning("staged rows of finished runs left for the duration's next run to remove",
                    extra={"error": str(error).strip()[:300]})


class PostgresRunState:
    """Where a run's state and rows live between its steps, which may run in different
    processes: every call stands alone, and staging is idempotent (chunks are redelivered).

    Only the chunks' calls (staging and the check before each) keep a connection per
    process; every other call opens a short one, as the steps of a run come minutes apart.
    """

    def __init__(self, dsn: str, *, connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
                 timeouts: Timeouts = NO_TIMEOUTS) -> None:
        self._dsn = dsn
        self._timeout_s = connect_timeout_s
        self._timeouts = timeouts.sql()
        self._session_timeouts = timeouts.sql(local=False)  # the view refresh runs outside a transaction
        self._staging = ReusedConnection("trend-aggregator-staging", timeout_s=connect_timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresRunState:
        database = Database.from_settings(settings)
        return cls(database.dsn, connect_timeout_s=database.connect_timeout_s,
                   timeouts=Timeouts(settings.pg_statement_timeout_finalize_s, settings.pg_lock_timeout_s))

    def __repr__(self) -> str:
        return f"PostgresRunState({mask_dsn(self._dsn)!r})"

    def _connect(self, *, autocommit: bool = False) -> Connection:
        return connect(self._dsn, autocommit=autocommit, timeout_s=self._timeout_s)

    def start(self, run_id: str, duration: Duration, calculated_at: datetime) -> None:
        with closing(self._connect()) as conn:
            with conn, conn.cursor() as cur:
                cur.execute("INSERT INTO trend_run (run_id, duration, calculated_at, status) "
                            "VALUES (%s, %s, %s, 'running') ON CONFLICT (run_id) DO NOTHING",
                            (run_id, duration.name, calculated_at))
            # The finalize appends to the history's day partition; maintenance creates the
            # coming days ahead, but a run for a past time may need an old one.
            partition_admin.ensure(conn, partitions.HISTORY, [partitions.HISTORY.range_of(calculated_at)])

    def record_plan(self, run_id: str, dois: int, chunks: int) -> None:
        with closing(self._connect()) as conn, conn, conn.cursor() as cur:
            cur.execute("UPDATE trend_run SET dois = %s, chunks = %s, planned_at = clock_timestamp() "
                        "WHERE run_id = %s", (dois, chunks, run_id))

    def stage_rows(self, run_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Keep a chunk's rows until the finalize; a redelivered chunk replaces its own rows.

        One ``COPY`` after deleting an earlier delivery's rows, on the process's kept
        connection: ``INSERT … ON CONFLICT`` quoting in Python and a connection per chunk
        cost 2.4 s of a ``year`` run's 14 s (``bench/year_scale.py``).
        """
        if not rows:
            return 0
        dois = [row["doi"] for row in rows]
        text = _copy_text(run_id, rows)

        def stage(cur: Cursor) -> None:
            cur.execute(self._timeouts)
            cur.execute("DELETE FROM trending_staging WHERE run_id = %s AND publication_doi = ANY(%s)",
                        (run_id, dois))
            cur.copy_expert(f"COPY trending_staging (run_id, publication_doi, {_COLS}) FROM STDIN",
                            io.StringIO(text))

        self._staging.run(self._dsn, stage)
        return len(rows)

    def finalize(self, run_id: str, duration: Duration, calculated_at: datetime) -> FinalizeResult:
        with closing(self._connect()) as conn:
            with conn, conn.cursor() as cur:
                cur.execute(self._timeouts)
                # A run given up while it waited (its lease expired: see worker/trends/lifecycle.py)
                # lost its staged rows: publishing what a late chunk restaged would be a partial set.
                cur.execute("SELECT status FROM trend_run WHERE run_id = %s FOR UPDATE", (run_id,))
                state = cur.fetchone()
                if state is None or state[0] != "running":
                    cur.execute("DELETE FROM trending_staging WHERE run_id = %s", (run_id,))
                    log.warning("run no longer running (abandoned); rows kept",
                                extra={"run_id": run_id, "status": state and state[0]})
                    return FinalizeResult("abandoned", 0)
                cur.execute("UPDATE trend_run SET finalize_at = clock_timestamp() WHERE run_id = %s", (run_id,))
                cur.execute("INSERT INTO trending_state (duration, calculated_at, run_id) "
                            "VALUES (%s, '-infinity', '') ON CONFLICT (duration) DO NOTHING", (duration.name,))
                cur.execute("SELECT calculated_at FROM trending_state WHERE duration = %s FOR UPDATE",
                            (duration.name,))
                [(current,)] = cur.fetchall()
                if current >= calculated_at:
                    cur.execute("DELETE FROM trending_staging WHERE run_id = %s", (run_id,))
                    cur.execute("UPDATE trend_run SET status = 'superseded', finished_at = clock_timestamp(), "
                                "rows_written = 0 WHERE run_id = %s", (run_id,))
                    log.warning("run superseded by a newer one; rows kept", extra={
                        "run_id": run_id, "duration": duration.name, "current": current.isoformat()})
                    return FinalizeResult("superseded", 0)
                cur.execute("DELETE FROM trending WHERE duration = %s", (duration.name,))
                cur.execute(_PUBLISH, {"run_id": run_id, "duration": duration.name, "at": calculated_at})
                [(rows, unknown, duplicate)] = cur.fetchall()
                cur.execute("UPDATE trending_state SET calculated_at = %s, run_id = %s WHERE duration = %s",
                            (calculated_at, run_id, duration.name))
                cur.execute("DELETE FROM trending_staging WHERE run_id = %s", (run_id,))
                cur.execute("UPDATE trend_run SET status = 'finalized', finished_at = clock_timestamp(), "
                            "rows_written = %s, rows_without_publication = %s, rows_duplicate_publication = %s "
                            "WHERE run_id = %s", (rows, unknown, duplicate, run_id))
            if unknown or duplicate:
                log.info("rows kept out of trending (in trending_history only)", extra={
                    "run_id": run_id, "without_publication": unknown, "duplicate_publication": duplicate})
            return FinalizeResult("finalized", rows, unknown, duplicate)

    def refresh_covid_view(self, run_id: str | None = None) -> None:
        """CONCURRENTLY: readers of the view are never blocked (needs the unique index)."""
        with closing(self._connect(autocommit=True)) as conn, conn.cursor() as cur:
            cur.execute(self._session_timeouts)
            cur.execute("REFRESH MATERIALIZED VIEW CONCURRENTLY trending_covid_papers")
            if run_id is not None:
                cur.execute("UPDATE trend_run SET refreshed_at = clock_timestamp() WHERE run_id = %s",
                            (run_id,))

    def abandon_runs(self, duration: Duration, keep: str | None = None) -> list[str]:
        """Fail every run of ``duration`` still marked running (but ``keep``), and drop their
        staged rows. Called by a run that just took the duration's lease: whatever else is
        "running" lost its lease, i.e. its worker died or it waited past the lease."""
        with closing(self._connect()) as conn:
            with conn, conn.cursor() as cur:
                cur.execute("UPDATE trend_run SET status = 'failed', finished_at = clock_timestamp(), "
                            "error = 'abandoned: its lease expired before it finished (worker killed, or stuck)' "
                            "WHERE duration = %s AND status = 'running' AND run_id IS DISTINCT FROM %s "
                            "RETURNING run_id", (duration.name, keep))
                gone = [run_id for (run_id,) in cur.fetchall()]
            # The staged rows of those, and any a failed run could not remove itself.
            _drop_staged(conn, "DELETE FROM trending_staging WHERE run_id IN (SELECT run_id FROM trend_run "
                               "WHERE duration = %s AND status <> 'running')", (duration.name,))
            return gone

    def is_running(self, run_id: str) -> bool:
        """Asked before every chunk, so on the kept connection: a connection per chunk cost
        about 0.5 s of a 14 s `year` run at 10M events (116 chunks), on loopback without TLS."""
        def check(cur: Cursor) -> bool:
            cur.execute("SELECT status = 'running' FROM trend_run WHERE run_id = %s", (run_id,))
            row = cur.fetchone()
            return bool(row and row[0])

        return self._staging.run(self._dsn, check)

    def fail(self, run_id: str, error: str) -> bool:
        """Mark the run failed if still running (whether it was); its staged rows go, the
        published rows stay. Two transactions, so the mark never waits behind what failed
        the run (a locked staging table); rows not removed within a short lock wait go with
        the duration's next run. A short connect timeout: the caller records it again later."""
        with closing(connect(self._dsn, timeout_s=min(self._timeout_s, _FAIL_CONNECT_TIMEOUT_S))) as conn:
            with conn, conn.cursor() as cur:
                cur.execute(self._timeouts)
                cur.execute("UPDATE trend_run SET status = 'failed', finished_at = clock_timestamp(), error = %s "
                            "WHERE run_id = %s AND status = 'running'", (error[:2000], run_id))
                failed = cur.rowcount == 1
            _drop_staged(conn, "DELETE FROM trending_staging WHERE run_id = %s", (run_id,))
            return failed

    def run_rows(self, duration: Duration, run_id: str) -> list[dict[str, Any]]:
        """The rows a run published in ``trending`` (for the store's trend history and for tests)."""
        with closing(self._connect()) as conn, conn, conn.cursor() as cur:
            cur.execute(f"SELECT publication_doi, {_COLS} FROM trending WHERE duration = %s AND run_id = %s",
                        (duration.name, run_id))
            return [{"doi": doi, **dict(zip(TREND_COLUMNS, rest, strict=True))} for doi, *rest in cur.fetchall()]

    def close(self) -> None:
        self._staging.close()
