"""The trend queries' SQL: qualifying DOIs and per-(DOI, window) sums, from the raw events
and, for the durations the day rollup serves (:func:`worker.core.day_rollup.serves`), from
whole rolled-up days plus the raw edges (docs/trends.md, "A run", "The day rollup").

Every trend-input variant returns the same binary COPY rows ``(i, k, sums…)``
(:func:`window_rows`), possibly several per ``(i, k)`` (one per part) that the store adds up.
"""

from __future__ import annotations

import struct

import numpy as np

from worker.core.day_rollup import HALF_DAY_S, TERMS
from worker.store.base import StoreUnavailable
from worker.store.postgres import copy


def ns_to_ts(param: str) -> str:
    return f"to_timestamp(0) + ({param}::bigint / 1000) * interval '1 microsecond'"


# Aggregates field -> SQL over the span's events (`ev`). float8: numeric arithmetic of
# sum(bigint) was most of the `year` run's database time; exact in float8 up to 2**53.
SUMS = {
    "count": "count(*)::float8",
    "sum_score": "sum(score)",
    # exp() raises on underflow in PostgreSQL; below e^-700 a weight is 0 in float64 anyway.
    "decayed_score": "sum(score * exp(greatest(%(g)s * age, -700)))",
    "sum_age": "sum(age)",
    "sum_sentiment": "sum(sentiment_raw)",
    "sum_followers": "sum(followers::float8)",
    "sum_abstract": "sum(contains_abstract_raw)",
    "sum_length": "sum(length)::float8",
    "sum_questions": "sum(questions)::float8",
    "sum_exclamations": "sum(exclamations)::float8",
    "sum_bot_rating": "sum(bot_rating)",
}
SCORE = list(SUMS).index("sum_score")
# The same sums over rolled-up days `r` (migration 0008) whose midpoint is `d.mid`
# (worker.core.day_rollup: ages from Σ x, the decayed score from Σ score·x^j).
_ROLLUP_SUMS = {
    "count": "sum(r.n)::float8",
    "sum_score": "sum(r.sum_score)",
    "decayed_score": "sum(exp(%(g)s * (%(now_s)s - d.mid)) * (r.sum_score + "
                     + " + ".join(f"%(c{j})s * r.score_x{j}" for j in range(1, TERMS + 1)) + "))",
    "sum_age": "sum(r.n * (%(now_s)s - d.mid) - r.sum_x)",
    **{name: f"sum(r.{name})" for name in ("sum_sentiment", "sum_followers", "sum_abstract", "sum_length",
                                           "sum_questions", "sum_exclamations", "sum_bot_rating")},
}
assert list(_ROLLUP_SUMS) == list(SUMS)

# JIT compiled each chunk's query for ~70 ms, more than most take; the grouped rows (a few
# MB) fit in memory as a hash table instead of being sorted on disk.
QUERY_SETTINGS = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'"


def _events(start: str, stop: str) -> str:
    """The events of DOI ``c.doi`` in ``[start, stop)``, with their age in whole seconds
    (``now - floor(epoch)``, exact in float8 for the years 1685-2255), from the covering
    ``(doi, time)`` index of each partition the range overlaps."""
    return f"""(
        SELECT %(now_s)s::float8 - floor(date_part('epoch', e.time)) AS age, e.score, e.sentiment_raw,
               e.followers, e.contains_abstract_raw, e.length, e.questions, e.exclamations, e.bot_rating
        FROM discussion_event e
        WHERE e.doi = c.doi AND e.time >= {ns_to_ts(start)} AND e.time < {ns_to_ts(stop)}
        OFFSET 0
    ) ev"""


_BY_WINDOW = f"SELECT c.i::int4, ev.age::int8 / %(w)s, {', '.join(SUMS.values())}"

# Per DOI position `i` in the chunk (integers hash and travel cheaply) and window `k`, the
# sums of its events in [now - span, now + 1 s) (worker.core.alignment).
TREND_WINDOWS = f"""
COPY (
    {_BY_WINDOW}
    FROM unnest(%(dois)s::text[]) WITH ORDINALITY AS c(doi, i)
    CROSS JOIN LATERAL {_events("%(start)s", "%(stop)s")}
    GROUP BY 1, 2
) TO STDOUT (FORMAT binary)
"""

# The whole days of the cover (`days`, each with its window `ks`) that are not marked stale,
# and the ranges read raw: the cover's (`lo`, `hi`) and the stale days.
_COVER = f"""
d AS MATERIALIZED (
    SELECT u.day, u.k, date_part('epoch', u.day) + {HALF_DAY_S} AS mid,
           EXISTS (SELECT FROM event_rollup_stale s WHERE s.day = u.day) AS stale
    FROM unnest(%(days)s::date[], %(ks)s::int8[]) AS u(day, k)),
raw AS MATERIALIZED (
    SELECT lo, hi FROM unnest(%(lo)s::int8[], %(hi)s::int8[]) AS r(lo, hi)
    UNION ALL
    SELECT date_part('epoch', day)::int8 * 1000000000, (date_part('epoch', day)::int8 + 86400) * 1000000000
    FROM d WHERE stale)"""
_ROLLED = "JOIN d ON d.day = r.day AND NOT d.stale WHERE r.day >= %(first)s AND r.day <= %(last)s"

# A DOI with fewer than `heavy` events in the rollup reads its span raw, as above: for it the
# rollup's rows and the edges' index descents cost more than its few events
# (docs/benchmarks.md, "The day rollup").
TREND_WINDOWS_ROLLUP = f"""
COPY (
    WITH c AS MATERIALIZED (
        SELECT c.doi, c.i, coalesce((SELECT sum(r.n) FROM event_rollup_day r
                                     WHERE r.doi = c.doi AND r.day >= %(first)s AND r.day <= %(last)s), 0)
                           >= %(heavy)s AS heavy
        FROM unnest(%(dois)s::text[]) WITH ORDINALITY AS c(doi, i)),
    {_COVER}
    {_BY_WINDOW} FROM c CROSS JOIN LATERAL {_events("%(start)s", "%(stop)s")} WHERE NOT c.heavy GROUP BY 1, 2
    UNION ALL
    {_BY_WINDOW} FROM c CROSS JOIN raw CROSS JOIN LATERAL {_events("raw.lo", "raw.hi")} WHERE c.heavy GROUP BY 1, 2
    UNION ALL
    SELECT c.i::int4, d.k, {", ".join(_ROLLUP_SUMS.values())}
    FROM c JOIN event_rollup_day r ON r.doi = c.doi AND c.heavy {_ROLLED}
    GROUP BY 1, 2
) TO STDOUT (FORMAT binary)
"""

# Its binary COPY rows (a field count, then length and value per field, big-endian), read
# straight into numpy: no float is formatted by PostgreSQL or parsed by Python.
WINDOW_ROW = np.dtype([("fields", ">i2"), ("i_len", ">i4"), ("i", ">i4"), ("k_len", ">i4"), ("k", ">i8")]
                      + [(f"{kind}{j}", code) for j in range(len(SUMS)) for kind, code in (("len", ">i4"),
                                                                                            ("v", ">f8"))])


def window_rows(data: bytes) -> np.ndarray:
    if not data.startswith(copy.SIGNATURE) or not data.endswith(copy.TRAILER):
        raise StoreUnavailable("PostgreSQL sent an unexpected COPY stream for the trend inputs")
    (extension,) = struct.unpack_from(">i", data, len(copy.SIGNATURE) + 4)
    start = len(copy.SIGNATURE) + 8 + extension
    body = len(data) - start - len(copy.TRAILER)
    if body % WINDOW_ROW.itemsize:
        raise StoreUnavailable("PostgreSQL sent trend inputs of an unexpected shape")
    rows = np.frombuffer(data, dtype=WINDOW_ROW, offset=start, count=body // WINDOW_ROW.itemsize)
    if rows.size and (rows["fields"] != 2 + len(SUMS)).any():
        raise StoreUnavailable("PostgreSQL sent trend inputs of an unexpected shape")
    return rows


QUALIFYING = f"""
SELECT doi FROM discussion_event
WHERE time >= {ns_to_ts("%(start)s")} AND time < {ns_to_ts("%(stop)s")}
GROUP BY doi HAVING count(*) > %(min)s ORDER BY doi
"""
# Per DOI, its whole days' counts (`rolled`) and its raw ranges' counts (`edges`), joined.
# `rolled` reads only the primary key (doi, day) INCLUDE (n), in DOI order, as PostgreSQL's
# parallel workers split it; each group is summed as it streams past and the two sorted
# streams merge. Hashing the ~0.8M groups instead (the planner's choice: it underestimates
# distinct DOIs ~9x under Zipf popularity) took twice as long (docs/benchmarks.md, "The day
# rollup"), hence QUALIFYING_ROLLUP_SETTINGS. The raw ranges are read one at a time through the
# time index (the LATERAL): joined plainly, the planner, without hash joins and taking half of
# the span's days for stale, chose at 30M events to read every event of the year in DOI order
# and filter them by range, 27-32 s against 3.9-4.6 s (docs/benchmarks.md, "The day rollup").
QUALIFYING_ROLLUP = f"""
WITH {_COVER},
rolled AS (
    SELECT r.doi, sum(r.n) AS n FROM event_rollup_day r  -- the whole days of the span are first..last
    WHERE r.day >= %(first)s AND r.day <= %(last)s AND r.day <> ALL (ARRAY(SELECT day FROM d WHERE stale))
    GROUP BY r.doi),
edges AS (
    SELECT e.doi, count(*) AS n
    FROM raw CROSS JOIN LATERAL (SELECT e.doi FROM discussion_event e
                                 WHERE e.time >= {ns_to_ts("raw.lo")} AND e.time < {ns_to_ts("raw.hi")} OFFSET 0) e
    GROUP BY e.doi)
SELECT doi FROM rolled FULL JOIN edges USING (doi)
WHERE coalesce(rolled.n, 0) + coalesce(edges.n, 0) > %(min)s
ORDER BY doi
"""
QUALIFYING_ROLLUP_SETTINGS = "SET LOCAL enable_hashagg = off; SET LOCAL enable_hashjoin = off"
# The select reads a stale day's events through their time index, a heap page per event in a
# backfill's random order: past about a month of stale days, the select over the events (a
# sequential scan) is cheaper (docs/benchmarks.md, "The day rollup").
SELECT_STALE_DAYS_MAX = 30
STALE_DAYS = "SELECT count(*) FROM event_rollup_stale WHERE day >= %(first)s AND day <= %(last)s"
