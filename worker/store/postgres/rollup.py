"""The per-(DOI, UTC day) rollup of ``discussion_event`` (migration 0008): marking and
rolling up; the run queries that read it are in :mod:`.trend_sql` (docs/trends.md, "The
day rollup").

Ingest only marks the days it wrote (:data:`MARK_STALE`, in the write's transaction): an
`INSERT … ON CONFLICT DO NOTHING` of a few rows, a few percent of ingest's time where
writing the rollup itself in that transaction took 1.24-1.80x (docs/benchmarks.md).
The maintenance task and `aggregator setup` roll up the marked days that have ended
(:func:`roll_up`), a month per transaction. A run reads a day from the rollup only while it
is unmarked, in the same statement (one snapshot), so the rollup is never behind a run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from itertools import groupby

from psycopg2.extensions import connection as Connection

from worker.core.day_rollup import HALF_DAY_S, TERMS

MARK_STALE = """
INSERT INTO event_rollup_stale (day)
SELECT DISTINCT ((to_timestamp(0) + time_us * interval '1 microsecond') AT TIME ZONE 'UTC')::date
FROM event_staging ORDER BY 1
ON CONFLICT DO NOTHING
"""
_STALE = "SELECT day FROM event_rollup_stale WHERE day >= %s AND day < %s ORDER BY day DESC"
_UNMARK = "DELETE FROM event_rollup_stale WHERE day = ANY(%(days)s)"
_FORGET = "DELETE FROM event_rollup_day WHERE day = ANY(%(days)s)"
_BUILD = f"""
INSERT INTO event_rollup_day
SELECT doi, day, count(*), sum(score), sum(sentiment_raw), sum(followers::float8), sum(contains_abstract_raw),
       sum(length)::float8, sum(questions)::float8, sum(exclamations)::float8, sum(bot_rating), sum(x),
       {", ".join(f"sum(score * x ^ {j})" for j in range(1, TERMS + 1))}
FROM (SELECT doi, (time AT TIME ZONE 'UTC')::date AS day, score, sentiment_raw, followers, contains_abstract_raw,
             length, questions, exclamations, bot_rating,
             floor(date_part('epoch', time)) - date_part('epoch', (time AT TIME ZONE 'UTC')::date) - {HALF_DAY_S} AS x
      FROM discussion_event
      WHERE time >= %(first)s::timestamp AT TIME ZONE 'UTC'
        AND time < (%(last)s + 1)::timestamp AT TIME ZONE 'UTC') e
WHERE day = ANY(%(days)s)
GROUP BY doi, day
"""
#: The days before the oldest events partition: retention dropped their events.
PRUNE = ("DELETE FROM event_rollup_day WHERE day < %s", "DELETE FROM event_rollup_stale WHERE day < %s")


@dataclass(frozen=True, slots=True)
class Rolled:
    month: str  # YYYY-MM
    days: int
    rows: int
    seconds: float


def roll_up(conn: Connection, before: date, *, since: date = date.min, deadline: float | None = None,
            on_month: Callable[[Rolled], object] | None = None) -> list[Rolled]:
    """Roll up the marked days from ``since`` to before ``before`` (the days that have ended), newest month
    first, one transaction per month (``conn`` must not be in autocommit); stops starting
    months after ``deadline`` (``time.perf_counter()``). Resumable: an interrupted month
    stays marked.

    Order matters for the marks: the month's marks are removed first and the events read by
    a later statement (each has its own snapshot), so a write committed after that read
    left its mark, or is waiting on the removed one and adds it back when this commits."""
    done: list[Rolled] = []
    with conn, conn.cursor() as cur:
        cur.execute(_STALE, (since, before))
        stale = [day for (day,) in cur.fetchall()]
    for month, group in groupby(stale, key=lambda day: day.strftime("%Y-%m")):
        if deadline is not None and time.perf_counter() > deadline:
            break
        days = list(group)
        started = time.perf_counter()
        params = {"days": days, "first": min(days), "last": max(days)}
        with conn, conn.cursor() as cur:
            cur.execute(_UNMARK, params)
            cur.execute(_FORGET, params)
            cur.execute(_BUILD, params)
            rows = cur.rowcount
        done.append(Rolled(month, len(days), rows, time.perf_counter() - started))
        if on_month is not None:
            on_month(done[-1])
    return done
