"""When a duration's trend counts as stale (pure; `aggregator health trends` reads it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.config.settings import Settings
from worker.core.durations import DEFAULT_DURATIONS
from worker.trends.freshness import Freshness, stale_after

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
BY_NAME = {d.name: d for d in DEFAULT_DURATIONS}


def bound(name: str) -> timedelta:
    return stale_after(BY_NAME[name], Settings())


def test_two_periods_and_one_runs_limits() -> None:
    assert bound("currently") == timedelta(seconds=2 * 180 + 15 + 120 + 120)
    assert bound("year") == timedelta(days=2, seconds=15 + 240)


@given(age_s=st.integers(0, 10 * 86400))
def test_stale_exactly_past_the_bound(age_s: int) -> None:
    fresh = Freshness("today", bound("today"), NOW - timedelta(seconds=age_s), NOW - timedelta(days=30), NOW)
    assert fresh.stale == (timedelta(seconds=age_s) > bound("today"))


def test_a_duration_that_never_ran_waits_for_the_product_to_have_run_a_bound() -> None:
    young = Freshness("year", bound("year"), None, NOW - timedelta(hours=5), NOW)
    old = Freshness("year", bound("year"), None, NOW - timedelta(days=3), NOW)
    empty = Freshness("year", bound("year"), None, None, NOW)
    assert (young.stale, old.stale, empty.stale) == (False, True, False)
    assert old.describe() == "never finalized (stale after 2.0 d, runs since 3.0 d ago)"


def test_describe_reads_as_an_operator_would() -> None:
    fresh = Freshness("currently", bound("currently"), NOW - timedelta(minutes=4), None, NOW)
    assert fresh.describe() == "last finalized 4 min ago (stale after 10 min)"
