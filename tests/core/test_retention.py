"""Partition ranges, retention cut-offs and history thinning, with a fake clock (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.thinning import bucket_of, thin
from worker.core.durations import DEFAULT_DURATIONS
from worker.core.partitions import EVENTS, HISTORY, Range, days_of_ns
from worker.core.retention import HistoryDay, Level, RetentionPolicy, plan

pytestmark = pytest.mark.unit

YEAR_S = max(d.span_s for d in DEFAULT_DURATIONS)
DEFAULTS = RetentionPolicy(400, 7, 35, 400)

moments = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


# --- partition ranges ----------------------------------------------------------------------------
@given(moments)
def test_a_time_falls_in_exactly_the_range_that_holds_it(at: datetime) -> None:
    for layout in (EVENTS, HISTORY):
        part = layout.range_of(at)
        assert part.start <= at < part.stop
        assert layout.range_of(part.start) == part
        assert layout.range_of(part.stop) != part and layout.range_of(part.stop).start == part.stop
        assert layout.parse(layout.name(part)) == part


@given(moments, st.integers(min_value=0, max_value=800 * 86400))
def test_ranges_cover_a_span_without_gap_or_overlap(start: datetime, length_s: int) -> None:
    stop = start + timedelta(seconds=length_s)
    for layout in (EVENTS, HISTORY):
        parts = layout.ranges(start, stop)
        if length_s == 0:
            assert parts == []
            continue
        assert parts[0].start <= start < parts[0].stop and parts[-1].start < stop <= parts[-1].stop
        assert all(a.stop == b.start for a, b in pairwise(parts))


def test_names_and_units() -> None:
    at = datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert EVENTS.range_of(at) == Range(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert EVENTS.name(EVENTS.range_of(at)) == "discussion_event_p20261201"
    assert HISTORY.name(HISTORY.range_of(at)) == "trending_history_p20261231"
    # Only product names are read back: anything else is an operator's, left alone.
    assert EVENTS.parse("discussion_event_p20261215") is None  # not a month's first day
    assert EVENTS.parse("trending_history_p20261201") is None
    assert EVENTS.parse("discussion_event_archive") is None
    assert HISTORY.parse("trending_history_p20261301") is None


@given(st.lists(st.integers(min_value=-(2**62), max_value=2**62), max_size=50))
def test_days_of_event_times_floor_also_before_1970(times_ns: list[int]) -> None:
    expected = {(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=t // 1000)).date() for t in times_ns}
    assert days_of_ns(times_ns) == expected


# --- retention ---------------------------------------------------------------------------------
def months(first: date, count: int) -> list[Range]:
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    return EVENTS.ranges(start, start + timedelta(days=31 * count - 1))[:count]


@settings(max_examples=200)
@given(moments, st.integers(min_value=366, max_value=800))
def test_event_partitions_go_only_when_all_of_them_is_past_the_retention(now: datetime, retention: int) -> None:
    policy = RetentionPolicy(retention, 7, 35, 400)
    existing = months((now - timedelta(days=retention + 90)).date(), 6)
    todo = plan(policy, now, existing, [])
    cutoff = now - timedelta(days=retention)
    assert todo.drop_events == [r for r in existing if r.stop <= cutoff]
    for dropped in todo.drop_events:  # never an event a run at `now` (any duration) reads
        assert dropped.stop <= now - timedelta(seconds=YEAR_S)
    # This month and the next are created ahead when missing, never one that exists.
    assert EVENTS.range_of(now) in todo.create_events
    assert not set(todo.create_events) & set(existing)


@settings(max_examples=300)
@given(moments, st.integers(1, 10), st.integers(0, 30), st.integers(0, 400), st.sampled_from(list(Level)))
def test_a_history_day_is_thinned_as_its_age_says_never_coarser(now: datetime, full: int, hourly_extra: int,
                                                                 retention_extra: int, level: Level) -> None:
    policy = RetentionPolicy(400, full, full + hourly_extra, full + hourly_extra + retention_extra)
    days = HISTORY.ranges(now - timedelta(days=policy.history_retention_days + 3), now)
    todo = plan(policy, now, [], [HistoryDay(day, level) for day in days])
    thinned = dict(todo.thin_history)
    for day in days:
        newest_row_age = now - day.stop  # every row of the day is at least this old
        if newest_row_age >= timedelta(days=policy.history_retention_days):
            assert day in todo.drop_history
            continue
        assert day not in todo.drop_history
        target = (Level.DAILY if newest_row_age >= timedelta(days=policy.history_hourly_days)
                  else Level.HOURLY if newest_row_age >= timedelta(days=policy.history_full_days) else Level.FULL)
        assert thinned.get(day, level) == max(target, level)  # thinned to the target, never back
    assert [day for day, _ in todo.thin_history] == sorted(thinned)  # oldest first


def test_policy_problems_name_the_variables() -> None:
    assert DEFAULTS.problems(YEAR_S) == []
    assert RetentionPolicy(366, 1, 1, 1).problems(YEAR_S) == []
    short = RetentionPolicy(365, 7, 35, 400).problems(YEAR_S)
    assert len(short) == 1 and short[0].startswith("EVENT_RETENTION_DAYS (365) must cover the longest trend span")
    unordered = RetentionPolicy(400, 40, 35, 400).problems(YEAR_S)
    assert len(unordered) == 1 and unordered[0].startswith("TREND_HISTORY_FULL_DAYS (40) <= TREND_HISTORY_HOURLY_DAYS")
    assert RetentionPolicy(400, 0, 35, 400).problems(YEAR_S)


# --- thinning ----------------------------------------------------------------------------------
rows = st.lists(st.tuples(st.sampled_from(["10.1/a", "10.1/b"]), st.sampled_from(["currently", "today"]),
                          st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 3, 3),
                                       timezones=st.just(UTC))), unique=True, max_size=200)


@given(rows)
def test_thinning_keeps_the_last_row_of_each_bucket(keys: list[tuple[str, str, datetime]]) -> None:
    for level in (Level.HOURLY, Level.DAILY):
        kept = thin(keys, level)
        assert kept <= set(keys)
        buckets = {(doi, duration, bucket_of(at, level)) for doi, duration, at in keys}
        assert len(kept) == len(buckets)  # one row per (DOI, duration, bucket)
        for doi, duration, at in keys:
            latest = max(k[2] for k in kept if k[:2] == (doi, duration) and bucket_of(k[2], level) ==
                         bucket_of(at, level))
            assert at <= latest
    assert thin(keys, Level.FULL) == set(keys)


@given(rows)
def test_daily_after_hourly_is_daily_of_everything(keys: list[tuple[str, str, datetime]]) -> None:
    """A day is thinned to hourly first and to daily weeks later: same result as at once."""
    assert thin(thin(keys, Level.HOURLY), Level.DAILY) == thin(keys, Level.DAILY)


def test_buckets_are_utc_hours_and_days() -> None:
    at = datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=UTC)
    assert bucket_of(at, Level.HOURLY) == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert bucket_of(at, Level.DAILY) == datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(KeyError):
        _ = Level.FULL.bucket
