"""Crons as beat reads them: the last tick at or before a time (a maintenance fire's slot)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.core.cron import latest_tick, min_period_s, parse_cron

pytestmark = pytest.mark.unit

CRONS = ["17 * * * *", "59 5 * * *", "*/3 * * * *", "4 3 * * *", "0 0 * * 1", "30 12 1 * *"]
TIMES = st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))


def test_latest_tick_of_the_hourly_maintenance() -> None:
    at = datetime(2026, 12, 3, 14, 17, tzinfo=UTC)
    assert latest_tick("17 * * * *", at) == at
    assert latest_tick("17 * * * *", at + timedelta(seconds=59, microseconds=999)) == at
    assert latest_tick("17 * * * *", at - timedelta(microseconds=1)) == at - timedelta(hours=1)
    assert latest_tick("59 5 * * *", at) == datetime(2026, 12, 3, 5, 59, tzinfo=UTC)
    assert latest_tick("0 0 * * 1", at) == datetime(2026, 11, 30, tzinfo=UTC)  # a Monday


def fires_at(expr: str, minute: datetime) -> bool:
    """Does celery's crontab (its parsed field sets) fire in this minute? The oracle."""
    cron: Any = parse_cron(expr)
    return (minute.minute in cron.minute and minute.hour in cron.hour and minute.day in cron.day_of_month
            and minute.month in cron.month_of_year and (minute.weekday() + 1) % 7 in cron.day_of_week)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(CRONS), TIMES)
def test_latest_tick_is_a_tick_and_no_later_tick_comes_before_the_time(expr: str, at: datetime) -> None:
    tick = latest_tick(expr, at)
    assert tick <= at and tick.second == tick.microsecond == 0
    assert fires_at(expr, tick)
    minute = tick + timedelta(minutes=1)
    while minute <= at:
        assert not fires_at(expr, minute), f"{minute} is a later tick than {tick}, before {at}"
        minute += timedelta(minutes=1)


@given(st.sampled_from(CRONS), TIMES, st.floats(min_value=0, max_value=1))
def test_every_fire_within_a_period_of_its_tick_names_the_same_slot(expr: str, at: datetime, late: float) -> None:
    """Two beats firing one tick, or a task starting late within the cron's period, claim one slot."""
    tick = latest_tick(expr, at)
    later = tick + timedelta(seconds=late * (min_period_s(expr) - 1))
    assert latest_tick(expr, later) == tick
