"""Events and trend history in time partitions, on a real PostgreSQL 15.

* existing rows of both tables move into the partitions (migration 0005), unchanged, and
  running the migration again changes nothing;
* writes create the month they need, a redelivered batch that spans months is written
  once, and a conflict (same id and time, other content) is still counted;
* trend inputs over spans that cross month boundaries equal the pure aggregation, with
  events on the boundaries themselves.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from importlib import resources

import numpy as np
import pytest
from yoyo import get_backend, read_migrations

from tests.support.helpers import q
from tests.support.sample_points import reference_aggregates
from worker.core import alignment, partitions
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.core.events import Point
from worker.db.migrate import migrate
from worker.store.postgres.store import PostgresStore

pytestmark = pytest.mark.integration

S = 1_000_000_000
US = 1_000



def ns(at: datetime) -> int:
    return int(at.timestamp()) * S + at.microsecond * US


def point(event_id: str, doi: str, t_ns: int, score: float = 1.0) -> Point:
    return Point(event_id, doi, t_ns, score, 0.5, 100, 120, 1, 0, 2.0, 0.25, 3.0, 1.0, 4.0, 5.0)


def event_partitions(dsn: str) -> list[str]:
    return [name for (name,) in q(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                       "WHERE i.inhparent = 'discussion_event'::regclass ORDER BY 1")]


def migrate_up_to_0004(dsn: str) -> None:
    backend = get_backend(dsn)
    migrations = read_migrations(str(resources.files("worker.db") / "migrations"))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: m.id < "0005")))
    backend.connection.close()


HISTORY_VALUES = "1.5, 3, 0.1, 100, 0.2, 50, 120, 1, 0, 2, 1.5, 0, 0, 0, 0, 0, 0, 'no trend', 1"


def test_existing_rows_move_into_partitions_unchanged(empty_pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    dsn = empty_pg_dsn
    migrate_up_to_0004(dsn)
    # Events in three months (one on a month's first microsecond, one on the last of the
    # month before) and history rows of two days, written as the old product wrote them.
    times = [datetime(2026, 9, 30, 23, 59, 59, 999_999, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC),
             datetime(2026, 10, 15, 12, tzinfo=UTC), datetime(2026, 11, 2, 8, tzinfo=UTC)]
    for i, at in enumerate(times):
        q(dsn, "INSERT INTO discussion_event (event_id, doi, time, score, sentiment_raw, followers, length, questions, "
               "exclamations, bot_rating, contains_abstract_raw, time_score, type_factor, user_score, content_score) "
               "VALUES (%s, '10.1/a', %s, %s, 0.5, 100, 120, 1, 0, 2, 0.25, 3, 1, 4, 5)", (f"e{i}", at, float(i)))
    for day, hour in ((22, 23), (23, 0), (23, 1)):
        q(dsn, f"INSERT INTO trending_history (publication_doi, duration, score, count, mean_sentiment, "
               f"sum_followers, abstract_difference, mean_age, mean_length, mean_questions, mean_exclamations, "
               f"mean_bot_rating, mean_score, stddev, ema, kama, ker, projected_change, trending, mk_trend, mk_p, "
               f"run_id, calculated_at) VALUES ('10.1/a', 'today', {HISTORY_VALUES}, 'run', %s)",
          (datetime(2026, 11, day, hour, tzinfo=UTC),))
    events_before = q(dsn, "SELECT * FROM discussion_event ORDER BY event_id")
    history_before = q(dsn, "SELECT * FROM trending_history ORDER BY calculated_at")

    with caplog.at_level(logging.INFO, logger="worker.db.migrations"):
        assert migrate(dsn) == ["0005.partition-events-and-history", "0006.trend-run-autovacuum",
                                "0007.dead-letter-triage", "0008.event-day-rollup"]
    # setup says how far the copy is (the last line of each table: every block copied)
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.db.migrations"]
    assert any(line.startswith("migration 0005: discussion_event copied (blocks): 1/1 (100%)") for line in lines), lines
    assert any(line.startswith("migration 0005: trending_history copied (blocks): 1/1 (100%)") for line in lines), lines
    assert q(dsn, "SELECT relkind FROM pg_class WHERE relname IN ('discussion_event', 'trending_history')") == [
        ("p",), ("p",)]
    assert event_partitions(dsn) == ["discussion_event_p20260901", "discussion_event_p20261001",
                                     "discussion_event_p20261101"]
    assert q(dsn, "SELECT tableoid::regclass::text, count(*) FROM trending_history GROUP BY 1 ORDER BY 1") == [
        ("trending_history_p20261122", 1), ("trending_history_p20261123", 2)]
    assert q(dsn, "SELECT * FROM discussion_event ORDER BY event_id") == events_before
    assert q(dsn, "SELECT * FROM trending_history ORDER BY calculated_at") == history_before
    assert not q(dsn, "SELECT relname FROM pg_class WHERE relname LIKE '%unpartitioned%'")

    # Setup again: nothing to apply; the step itself again (a restored bookkeeping table): no change.
    assert migrate(dsn) == []
    backend = get_backend(dsn)
    with backend.lock():
        backend.unmark_migrations(read_migrations(str(resources.files("worker.db") / "migrations")).filter(
            lambda m: m.id.startswith("0005")))
    backend.connection.close()
    assert migrate(dsn) == ["0005.partition-events-and-history"]
    assert q(dsn, "SELECT * FROM discussion_event ORDER BY event_id") == events_before
    assert len(event_partitions(dsn)) == 3


def test_a_batch_across_months_is_written_once_however_often_it_comes(pg_dsn: str) -> None:
    boundary = ns(datetime(2026, 12, 1, tzinfo=UTC))
    batch = [point(f"b{i}", f"10.1/{i % 3}", boundary + (i - 10) * 500 * US) for i in range(20)]
    batch += [point("far-future", "10.1/x", ns(datetime(2031, 5, 5, tzinfo=UTC))),
              point("long-ago", "10.1/x", ns(datetime(1999, 1, 1, tzinfo=UTC)))]
    store = PostgresStore(pg_dsn)
    assert store.write(batch) == 0
    assert store.write(batch) == 0  # redelivered whole
    assert store.write(list(reversed(batch[5:15]))) == 0  # and a part of it, re-split, in another order
    other = PostgresStore(pg_dsn)  # another worker process, which knows no partition yet
    assert other.write(batch[::3]) == 0
    assert q(pg_dsn, "SELECT count(*), count(DISTINCT event_id) FROM discussion_event") == [(22, 22)]
    assert event_partitions(pg_dsn) == ["discussion_event_p19990101", "discussion_event_p20261101",
                                        "discussion_event_p20261201", "discussion_event_p20310501"]
    per_month = q(pg_dsn, "SELECT tableoid::regclass::text, count(*) FROM discussion_event WHERE event_id LIKE 'b%%' "
                          "GROUP BY 1 ORDER BY 1")
    assert per_month == [("discussion_event_p20261101", 10), ("discussion_event_p20261201", 10)]
    # Same id and time, other content, on either side of the boundary: not stored, counted.
    clash = [point("b9", "10.1/0", boundary - 500 * US, score=7.0), point("b10", "10.1/1", boundary, score=7.0)]
    assert store.write(clash) == 2
    assert q(pg_dsn, "SELECT count(*) FROM discussion_event WHERE score = 7.0") == [(0,)]


def test_a_late_event_for_a_dropped_partition_is_stored_not_refused(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    old = ns(datetime(2025, 3, 10, tzinfo=UTC))
    store.write([point("x1", "10.1/a", old)])
    q(pg_dsn, "DROP TABLE discussion_event_p20250301")  # the maintenance task dropped it meanwhile
    assert store.write([point("x2", "10.1/a", old + S)]) == 0  # the store still thought it existed
    assert q(pg_dsn, "SELECT event_id FROM discussion_event") == [("x2",)]


@pytest.mark.parametrize("duration", [d for d in DEFAULT_DURATIONS if d.span_s >= 7 * 86400], ids=lambda d: d.name)
def test_trend_inputs_across_month_boundaries_equal_the_pure_aggregation(pg_dsn: str, duration: Duration) -> None:
    """A run just after a month began, with events on both sides of every month boundary
    in its span (the first and last microsecond of each month) and spread in between."""
    now = ns(datetime(2026, 12, 1, 0, 0, 7, tzinfo=UTC))
    start = now - duration.span_s * S
    rng = np.random.default_rng(5)
    points: list[Point] = []
    months = partitions.EVENTS.ranges(datetime.fromtimestamp(start // S, UTC), datetime.fromtimestamp(now // S, UTC))
    assert len(months) >= 2
    for m in months[1:]:
        edge = ns(m.start)
        for j, t in enumerate((edge - US, edge, edge + US, edge - S, edge + S)):
            points.append(point(f"edge-{edge}-{j}", f"10.1/{j % 2}", t, 1.0 + j))
    for i, age in enumerate(rng.uniform(0, duration.span_s, 300)):
        points.append(point(f"r{i}", f"10.1/{i % 3}", now - int(age * S) // US * US, float(rng.uniform(1, 50))))
    store = PostgresStore(pg_dsn)
    store.write(points)
    dois = ["10.1/0", "10.1/1", "10.1/2"]
    got = store.trend_inputs(duration, now, dois)

    want = reference_aggregates(points, dois, now, duration)
    assert got.count.tolist() == want.count.tolist()
    np.testing.assert_array_equal(got.series != 0, want.series != 0)  # every event in its window
    for field in ("sum_score", "decayed_score", "sum_age", "sum_followers", "sum_length", "series"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12, atol=1e-9, err_msg=field)
    assert got.count.sum() == sum(alignment.in_span(duration, now, p.time_ns) for p in points)


def test_a_table_of_many_blocks_is_copied_whole_in_block_ranges(empty_pg_dsn: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """The copy goes in ranges of blocks (progress lines); every row arrives, once."""
    dsn = empty_pg_dsn
    migrate_up_to_0004(dsn)
    q(dsn, "INSERT INTO discussion_event (event_id, doi, time, score, sentiment_raw, followers, length, questions, "
           "exclamations, bot_rating, contains_abstract_raw, time_score, type_factor, user_score, content_score) "
           "SELECT 'e' || i, '10.1/' || (i % 97), timestamp '2026-10-01 00:00:00+00' + i * interval '7 minutes', "
           "i, 0.5, 100, 120, 1, 0, 2, 0.25, 3, 1, 4, 5 FROM generate_series(1, 20000) i")
    before = q(dsn, "SELECT count(*), sum(score), count(DISTINCT event_id) FROM discussion_event")
    (blocks,), = q(dsn, "SELECT pg_relation_size('discussion_event') / current_setting('block_size')::int")
    assert blocks > 100  # many block ranges, the last one partial
    with caplog.at_level(logging.INFO, logger="worker.db.migrations"):
        migrate(dsn)
    assert q(dsn, "SELECT count(*), sum(score), count(DISTINCT event_id) FROM discussion_event") == before
    lines = [r.getMessage() for r in caplog.records if r.name == "worker.db.migrations"]
    assert any(line.startswith(f"migration 0005: discussion_event copied (blocks): {blocks}/{blocks} (100%)")
               for line in lines), lines
