"""The day rollup against the raw events, on a real PostgreSQL: whatever the order of writes,
redeliveries, late events and roll-ups, a `year` run's qualifying DOIs and every trend input
read through the rollup equal the raw path's within 1e-9 (worker/store/postgres/rollup.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import numpy as np
import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import structs

from tests.support.helpers import q
from tests.support.trend_seed import S, roll_up
from worker.core.day_rollup import DAY_S, day_start_s
from worker.core.durations import DEFAULT_DURATIONS
from worker.core.events import Point
from worker.db.migrate import migrate
from worker.store.postgres import rollup, trend_sql
from worker.store.postgres.store import PostgresStore

pytestmark = pytest.mark.integration

YEAR = replace(next(d for d in DEFAULT_DURATIONS if d.name == "year"), min_events=2)
NOW_S = 1_790_000_000  # 2026-09-21T13:33:20Z; a whole second, as a run's time is
TODAY = date(1970, 1, 1) + timedelta(days=NOW_S // DAY_S)
# Where the two paths could part: day starts, window edges, both span ends, now.
_EDGES = sorted({NOW_S - k * YEAR.window_s for k in range(YEAR.windows + 1)} | {NOW_S - YEAR.span_s, NOW_S}
                | {day_start_s(TODAY - timedelta(days=n)) for n in range(0, 370, 7)})


@st.composite
def events(draw: st.DrawFn) -> list[Point]:
    """Times on and beside the edges (a second before, at it, sub-second after), some in
    the same second, and anywhere in the span; three DOIs."""
    n = draw(st.integers(1, 40))
    points = []
    for i in range(n):
        if draw(st.booleans()):
            base = draw(st.sampled_from(_EDGES)) + draw(st.sampled_from((-1, 0, 1)))
        else:
            base = NOW_S - draw(st.integers(0, YEAR.span_s + DAY_S))
        t_ns = base * S + draw(st.sampled_from((0, 1_000, 999_999_000)))
        # Scores of a real magnitude: PostgreSQL raises on a float product that underflows to
        # 0, which a score below ~1e-290 makes in the raw path's decay as in the rollup's
        # (docs/trends.md, "The day rollup").
        score = draw(st.one_of(st.just(0.0), st.floats(1e-6, 80), st.floats(-50, -1e-6)))
        points.append(Point(f"e{i}", draw(st.sampled_from(("10.1/a", "10.1/b", "10.1/c"))), t_ns, score,
                            draw(st.floats(-1, 1)), draw(st.integers(0, 10**7)), 120, 1, 0, 2.0,
                            draw(st.floats(0, 1)), 1.0, 1.0, 2.0, 3.0))
    return points


@pytest.fixture
def stores(pg_dsn: str) -> Iterator[tuple[str, PostgresStore, PostgresStore]]:
    raw, rolled = PostgresStore(pg_dsn), PostgresStore(pg_dsn, query_connections=2, rollup_min_events=0)
    yield pg_dsn, raw, rolled
    raw.close()
    rolled.close()


def assert_same(raw: PostgresStore, rolled: PostgresStore) -> None:
    now_ns = NOW_S * S
    assert rolled.qualifying_dois(YEAR, now_ns) == raw.qualifying_dois(YEAR, now_ns)
    dois = ["10.1/a", "10.1/b", "10.1/c", "10.1/none"]
    want, got = raw.trend_inputs(YEAR, now_ns, dois), rolled.trend_inputs(YEAR, now_ns, dois)
    for field in ("count", "sum_score", "decayed_score", "sum_age", "sum_sentiment", "sum_followers",
                  "sum_abstract", "sum_length", "sum_questions", "sum_exclamations", "sum_bot_rating", "series"):
        # Sums of mixed signs: the tolerance is relative to the largest term, as float addition in
        # another order gives.
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-9, atol=1e-9 * 8e7,
                                   err_msg=field)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=events(), late=events(), cut=st.integers(0, 400), redeliver=st.booleans())
def test_reads_through_the_rollup_equal_the_raw_events(stores: tuple[str, PostgresStore, PostgresStore],
                                                        first: list[Point], late: list[Point], cut: int,
                                                        redeliver: bool) -> None:
    dsn, raw, rolled = stores
    with closing(psycopg2.connect(dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("TRUNCATE discussion_event, event_rollup_day, event_rollup_stale")
    raw.write(first)
    roll_up(dsn, TODAY - timedelta(days=cut))  # the days before some day are rolled up, the rest stay marked
    assert_same(raw, rolled)
    # Late events land in rolled-up days (their marks send the run to the raw events until the
    # next roll-up); a redelivered batch is stored and counted once.
    raw.write([structs.replace(p, event_id=f"late-{p.event_id}") for p in late])
    if redeliver:
        raw.write(first)
    assert_same(raw, rolled)
    roll_up(dsn)
    assert_same(raw, rolled)
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT coalesce(sum(n), 0) FROM event_rollup_day")
        assert cur.fetchone() == (len({p.event_id: p for p in first}) + len(late),)  # nothing counted twice


def test_setup_rolls_up_the_events_stored_before_the_rollup_month_by_month(pg_dsn: str) -> None:
    """Migration 0008 on a populated database marks every stored day; the roll-up, interrupted
    after a month, goes on where it stopped; each month is one transaction."""
    raw = PostgresStore(pg_dsn)
    raw.write([Point(f"e{n}", "10.1/a", (NOW_S - n * 9 * DAY_S) * S, 1.0, 0.0, 1, 1, 0, 0, 0.0, 0.0, 1.0, 1.0,
                     1.0, 1.0) for n in range(40)])  # one a week, back a year
    with closing(psycopg2.connect(pg_dsn)) as conn, conn, conn.cursor() as cur:
        cur.execute("DELETE FROM _yoyo_migration WHERE migration_id = '0008.event-day-rollup'")  # as before 0008
        cur.execute("DROP TABLE event_rollup_day, event_rollup_stale")
    assert migrate(pg_dsn) == ["0008.event-day-rollup"]
    with closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*), min(day), max(day) FROM event_rollup_stale")
        first_day = TODAY - timedelta(days=39 * 9)
        assert cur.fetchone() == ((TODAY - first_day).days + 1, first_day, TODAY)
        rolled = roll_up_some(conn, TODAY)
    assert rolled[0].month == "2026-09" and len(rolled) == 1
    assert [r.month for r in roll_up(pg_dsn, TODAY)][:2] == ["2026-08", "2026-07"]
    assert roll_up(pg_dsn, TODAY) == []
    assert_same(raw, PostgresStore(pg_dsn, rollup_min_events=0))


def roll_up_some(conn: psycopg2.extensions.connection, before: date) -> list[rollup.Rolled]:
    """A roll-up interrupted (as by Ctrl-C) once its first month is committed."""
    seen: list[rollup.Rolled] = []

    def interrupt(month: rollup.Rolled) -> None:
        seen.append(month)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rollup.roll_up(conn, before, on_month=interrupt)
    return seen


def test_a_write_racing_a_roll_up_keeps_its_mark(pg_dsn: str) -> None:
    """The roll-up's order, step by step on its own connection: its marks removed (not yet
    committed), a write of the same day meanwhile (it waits on the removed mark), the day
    read and committed; the write then commits with its mark, so runs read that day raw."""
    raw, rolled = PostgresStore(pg_dsn), PostgresStore(pg_dsn, rollup_min_events=0)
    day_s = day_start_s(TODAY - timedelta(days=10))
    point = Point("a", "10.1/a", day_s * S, 2.0, 0.0, 1, 1, 0, 0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0)
    raw.write([point, structs.replace(point, event_id="b", time_ns=(day_s + 60) * S)])
    roll_up(pg_dsn)
    day = TODAY - timedelta(days=10)
    params = {"days": [day], "first": day, "last": day}
    with closing(psycopg2.connect(pg_dsn)) as conn:
        roll_up_cur = conn.cursor()
        raw.write([structs.replace(point, event_id="c", time_ns=(day_s + 120) * S)])  # marks the day again
        roll_up_cur.execute(rollup._UNMARK, params)
        late = threading.Thread(target=raw.write, args=([structs.replace(point, event_id="d",
                                                                          time_ns=(day_s + 180) * S)],))
        late.start()
        wait_for_lock_wait(pg_dsn)  # the late write waits on the removed mark
        roll_up_cur.execute(rollup._FORGET, params)
        roll_up_cur.execute(rollup._BUILD, params)
        conn.commit()
        late.join(timeout=30)
        assert not late.is_alive()
    assert q(pg_dsn, "SELECT day FROM event_rollup_stale") == [(day,)]  # the late write's mark stands
    assert q(pg_dsn, "SELECT n FROM event_rollup_day") == [(3,)]  # a, b, c: the roll-up did not see d
    assert_same(raw, rolled)  # and the runs count d, reading the marked day raw
    raw.close()
    rolled.close()


def wait_for_lock_wait(dsn: str) -> None:
    """Until a session of the database waits on a lock (pg_stat_activity says so)."""
    for _ in range(3000):
        if q(dsn, "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                  "AND wait_event_type = 'Lock'")[0][0]:
            return
        threading.Event().wait(0.01)
    raise AssertionError("no session waited on a lock")


def test_the_select_reads_the_raw_ranges_through_the_time_index(pg_dsn: str) -> None:
    """The select's raw ranges (the span's first day, today, stale days) are read range by
    range: joined plainly, the planner read every event of the year in DOI order and filtered
    them by range, 27-32 s at 30M events (docs/benchmarks.md, "The day rollup")."""
    store = PostgresStore(pg_dsn, rollup_min_events=0)
    store.write([Point(f"e{n}", f"10.1/{n % 97}", (NOW_S - n * 1_777) * S, 1.0, 0.0, 1, 1, 0, 0, 0.0, 0.0, 1.0, 1.0,
                       1.0, 1.0) for n in range(YEAR.span_s // 1_777)])
    roll_up(pg_dsn, TODAY)
    params = store._rollup_params(YEAR, NOW_S * S, by_window=False)
    store.close()
    assert params is not None
    with closing(psycopg2.connect(pg_dsn)) as conn, conn.cursor() as cur:
        cur.execute("ANALYZE")
        cur.execute(trend_sql.QUERY_SETTINGS)
        cur.execute(trend_sql.QUALIFYING_ROLLUP_SETTINGS)
        # What 30M events made the planner weigh (sorting the ranges' events by DOI dearer than
        # reading the year presorted), on a few events: sorting made dear.
        cur.execute("SET LOCAL enable_sort = off")
        cur.execute("EXPLAIN (FORMAT JSON) " + trend_sql.QUALIFYING_ROLLUP, {"min": YEAR.min_events, **params})
        [(plan,)] = cur.fetchall()

    def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if node.get("Relation Name", "").startswith("discussion_event"):
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    found = list(scans(plan[0]["Plan"]))
    assert found
    for scan in found:
        assert any("time" in scan.get(key, "") for key in ("Index Cond", "Recheck Cond", "Filter")), scan
