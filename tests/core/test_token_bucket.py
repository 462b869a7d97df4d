"""The token bucket's arithmetic (pure, fake clocks): never more than burst + rate x time."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.helpers import admitted_bound
from worker.core.token_bucket import UNIT, Bucket, take

pytestmark = pytest.mark.unit

RATES = st.sampled_from([0.5, 1.0, 3.0, 10.0, 20.0, 1000.0 / 60, 0.1])
GAPS = st.lists(st.integers(min_value=0, max_value=3_000_000), min_size=1, max_size=200)


def run(rate: float, capacity: float, gaps: list[int]) -> list[tuple[int, bool, int]]:
    """Takes at the given gaps (µs) from t0; (time, granted, wait) each."""
    state: Bucket | None = None
    now = 1_700_000_000_000_000
    out = []
    for gap in gaps:
        now += gap
        result = take(state, now, rate, capacity)
        state = result.state
        out.append((now, result.wait_us == 0, result.wait_us))
    return out


@settings(max_examples=300)
@given(RATES, st.integers(min_value=1, max_value=20), GAPS)
def test_no_interval_admits_more_than_burst_plus_refill(rate: float, capacity: int, gaps: list[int]) -> None:
    granted = [t for t, ok, _ in run(rate, capacity, gaps) if ok]
    for i in range(len(granted)):
        for j in range(i, len(granted)):
            assert j - i + 1 <= admitted_bound(capacity, rate, (granted[j] - granted[i]) / 1e6) + 1e-9


@given(RATES, st.integers(min_value=1, max_value=20), GAPS)
def test_a_refused_take_is_granted_once_its_wait_is_over(rate: float, capacity: int, gaps: list[int]) -> None:
    state: Bucket | None = None
    now = 0
    for gap in gaps:
        now += gap
        result = take(state, now, rate, capacity)
        if result.wait_us:
            assert take(result.state, now + result.wait_us - 1, rate, capacity).wait_us != 0 or result.wait_us == 1
            assert take(result.state, now + result.wait_us, rate, capacity).wait_us == 0
        state = result.state


@given(RATES, st.integers(min_value=1, max_value=20))
def test_a_full_bucket_grants_its_burst_at_once_then_the_rate(rate: float, capacity: int) -> None:
    state = None
    for _ in range(capacity):
        result = take(state, 0, rate, capacity)
        assert result.wait_us == 0
        state = result.state
    refused = take(state, 0, rate, capacity)
    assert refused.wait_us == pytest.approx(UNIT / rate, abs=1)


def test_a_clock_going_back_mints_nothing() -> None:
    state = take(None, 10_000_000, 1.0, 1).state  # empty at t = 10 s
    back = take(state, 5_000_000, 1.0, 1)
    assert back.wait_us != 0 and back.state.at_us == 10_000_000
    assert take(back.state, 11_000_000, 1.0, 1).wait_us == 0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        take(None, 0, 0.0, 1)
    with pytest.raises(ValueError):
        take(None, 0, 1.0, 0.5)
