"""The day cover: whole days plus raw ranges are exactly the span, each day in one window;
the stored series gives the decayed weight to 1e-9 (worker/core/day_rollup.py)."""

from __future__ import annotations

import math
from dataclasses import replace
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.core import alignment
from worker.core.day_rollup import DAY_S, HALF_DAY_S, MAX_GX, cover, day_start_s, decay_coefficients, serves
from worker.core.durations import DEFAULT_DURATIONS

pytestmark = pytest.mark.unit

S = alignment.NS_PER_S
YEAR = next(d for d in DEFAULT_DURATIONS if d.name == "year")


def test_only_the_slow_long_windowed_durations_are_served() -> None:
    assert [d.name for d in DEFAULT_DURATIONS if serves(d)] == ["year"]
    assert not serves(replace(YEAR, window_s=DAY_S))  # a window must hold a whole day
    assert not serves(replace(YEAR, gravity=-MAX_GX / HALF_DAY_S * 1.01))  # the series would not converge to 1e-9


@given(now_s=st.integers(-10**9, 4 * 10**9), window_days=st.floats(2, 40), windows=st.integers(1, 80),
       extra_s=st.integers(0, 3 * DAY_S), by_window=st.booleans())
def test_days_and_raw_ranges_are_exactly_the_span(now_s: int, window_days: float, windows: int, extra_s: int,
                                                  by_window: bool) -> None:
    duration = replace(YEAR, window_s=int(window_days * DAY_S), windows=windows,
                       span_s=int(window_days * DAY_S) * windows + extra_s)
    now_ns = now_s * S
    start, stop = alignment.span_range(duration, now_ns)
    found = cover(duration, now_ns, by_window=by_window)
    pieces = sorted([(day_start_s(d) * S, (day_start_s(d) + DAY_S) * S) for d in found.days] + found.raw)
    assert pieces[0][0] == start and pieces[-1][1] == stop
    assert all(a[1] == b[0] for a, b in pairwise(pieces))  # no gap, no overlap
    assert all(lo < hi for lo, hi in pieces)
    for day, k in zip(found.days, found.windows, strict=True):
        first, last = day_start_s(day) * S, (day_start_s(day) + DAY_S - 1) * S
        assert alignment.in_span(duration, now_ns, first) and alignment.in_span(duration, now_ns, last)
        if by_window:  # k >= windows: older than the series, in the sums only (as for raw events)
            ages = {alignment.age_s(now_ns, t) // duration.window_s for t in (first, last)}
            assert ages == {k}


def test_a_year_reads_six_days_in_seven_from_the_rollup() -> None:
    found = cover(YEAR, 1_790_000_000 * S, by_window=True)
    assert len(found.days) == 305 and len(found.raw) == 61  # each window edge cuts a day
    assert len(cover(YEAR, 1_790_000_000 * S, by_window=False).raw) == 2  # the span's first and last day


@given(gx=st.floats(-MAX_GX, MAX_GX), scale=st.floats(1e-9, 1e-5))
def test_the_stored_series_gives_the_decay_to_1e_9(gx: float, scale: float) -> None:
    gravity, x = -scale, gx / scale  # any gravity and offset with |g·x| <= MAX_GX
    series = 1 + sum(c * x**j for j, c in enumerate(decay_coefficients(gravity), 1))
    assert series == pytest.approx(math.exp(-gravity * x), rel=1e-10)
