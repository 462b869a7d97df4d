"""The vectorized trend math against straightforward per-DOI implementations.

Every quantity is checked against an independent reference written here one DOI at a
time: plain loops over events and windows, ``statistics.stdev``, pandas ``ewm`` for the
EMA, a textbook KAMA loop, a per-series loop over the Holt grid (cross-checked against
statsmodels with the same parameters), and pymannkendall itself for Theil–Sen and
Mann–Kendall. Examples always hold several DOIs, so any cross-talk between DOIs in the
vectorized code (a wrong offset, a shared accumulator) shows up as a mismatch.
"""

from __future__ import annotations

import math
import statistics
import warnings
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import pymannkendall as mk
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import ndtr
from scipy.stats import norm
from statsmodels.tsa.holtwinters import Holt

from tests.support.event_columns import EVENT_FIELDS, EventColumns, aggregate_events
from worker.core.aggregates import Aggregates
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.trends import math as tm
from worker.trends.math import HOLT_ALPHAS, HOLT_BETAS, TREND_COLUMNS, compute_trends, rows

pytestmark = pytest.mark.unit

CURRENTLY = next(d for d in DEFAULT_DURATIONS if d.name == "currently")
YEAR = next(d for d in DEFAULT_DURATIONS if d.name == "year")
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Event:
    age: float
    score: float
    sentiment_raw: float = 0.0
    followers: float = 0.0
    length: float = 0.0
    questions: float = 0.0
    exclamations: float = 0.0
    bot_rating: float = 0.0
    contains_abstract_raw: float = 0.0


def columns_of(events_per_doi: list[list[Event]], shuffle_seed: int | None = None) -> EventColumns:
    """Columnar input as a store would build it; optionally in a shuffled event order."""
    flat = [(doi, event) for doi, events in enumerate(events_per_doi) for event in events]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(flat))
        flat = [flat[k] for k in order]
    return EventColumns(
        doi_index=np.array([doi for doi, _ in flat], dtype=np.int64),
        age_s=np.array([e.age for _, e in flat], dtype=np.float64),
        **{name: np.array([getattr(e, name) for _, e in flat], dtype=np.float64) for name in EVENT_FIELDS},
    )


# --------------------------------------------------------------------------- references


def ref_series(events: list[Event], duration: Duration) -> list[float]:
    """Window j covers ages [(windows-1-j)·w, (windows-j)·w); exact integer bounds."""
    series = [0.0] * duration.windows
    for event in events:
        if not 0 <= event.age <= duration.span_s:
            continue
        for j in range(duration.windows):
            low = (duration.windows - 1 - j) * duration.window_s
            if low <= event.age < low + duration.window_s:
                series[j] += event.score
    return series


def ref_weight(age: float, gravity: float) -> float:
    if age == 0:
        return 1.0
    exponent = gravity * age
    return math.exp(exponent) if exponent > -1e308 else 0.0


def ref_stddev(x: list[float]) -> float:
    return statistics.stdev(x) if len(x) > 1 else 0.0


def ref_ema(x: list[float]) -> float:
    return float(pd.Series(x).ewm(span=10, adjust=False).mean().iloc[-1])


def ref_kama(x: list[float]) -> tuple[float, float]:
    """Textbook KAMA loop (ER period 10, fast 2, slow 30), ER 0 without volatility."""
    if len(x) < 2:
        return x[0], 0.0
    period = min(10, len(x) - 1)
    fast, slow = 2 / 3, 2 / 31
    kama, er = x[period - 1], 0.0
    for t in range(period, len(x)):
        direction = abs(x[t] - x[t - period])
        volatility = sum(abs(x[k] - x[k - 1]) for k in range(t - period + 1, t + 1))
        er = direction / volatility if volatility > 0 else 0.0
        kama += (er * (fast - slow) + slow) ** 2 * (x[t] - kama)
    return kama, er


def ref_holt_fit(x: list[float]) -> tuple[float, float, float]:
    """(forecast, alpha, beta): one series, every grid pair, first minimum wins."""
    if len(x) == 1:
        return x[0], HOLT_ALPHAS[0], HOLT_BETAS[0]
    best: tuple[float, float, float, float] | None = None
    for alpha in HOLT_ALPHAS:
        for beta in HOLT_BETAS:
            level, trend, sse = x[1], x[1] - x[0], 0.0
            for value in x[2:]:
                forecast = level + trend
                error = value - forecast
                sse += error * error
                level = forecast + alpha * error
                trend = trend + (alpha * beta) * error
            if best is None or sse < best[0]:
                best = (sse, level + trend, alpha, beta)
    assert best is not None
    return best[1], best[2], best[3]


def ref_mann_kendall(x: list[float]) -> tuple[float, str, float]:
    """(Theil–Sen slope, trend, p) from pymannkendall; slope 0 for a single window."""
    if len(x) < 2:
        return 0.0, "no trend", 1.0
    result = mk.original_test(np.array(x))
    slope = mk.sens_slope(np.array(x)).slope
    return float(slope), result.trend, float(result.p)


def ref_series_stats(x: list[float]) -> dict[str, Any]:
    kama, ker = ref_kama(x)
    slope, trend, p = ref_mann_kendall(x)
    return {
        "stddev": ref_stddev(x),
        "ema": ref_ema(x),
        "kama": kama,
        "ker": ker,
        "projected_change": ref_holt_fit(x)[0],
        "trending": slope,
        "mk_trend": trend,
        "mk_p": p,
    }


def ref_row(events: list[Event], duration: Duration) -> dict[str, Any]:
    taking = [e for e in events if 0 <= e.age <= duration.span_s]
    n = len(taking)

    def mean(values: list[float]) -> float:
        return sum(values) / n if n else 0.0

    row: dict[str, Any] = {
        "score": sum(e.score * ref_weight(e.age, duration.gravity) for e in taking),
        "count": n,
        "mean_sentiment": mean([e.sentiment_raw for e in taking]),
        "sum_followers": sum(e.followers for e in taking),
        "abstract_difference": mean([e.contains_abstract_raw for e in taking]),
        "mean_age": mean([e.age for e in taking]),
        "mean_length": mean([e.length for e in taking]),
        "mean_questions": mean([e.questions for e in taking]),
        "mean_exclamations": mean([e.exclamations for e in taking]),
        "mean_bot_rating": mean([e.bot_rating for e in taking]),
        "mean_score": mean([e.score for e in taking]),
    }
    row.update(ref_series_stats(ref_series(events, duration)))
    return row


# --------------------------------------------------------------------------- comparison


def assert_close(name: str, got: float, want: float, scale: float = 1.0) -> None:
    """Relative 1e-9, with absolute slack relative to the magnitudes involved."""
    assert math.isfinite(got), f"{name}: {got} is not finite"
    tolerance = 1e-9 * max(1.0, abs(want), scale)
    assert abs(got - want) <= tolerance, f"{name}: got {got!r}, want {want!r}"


def assert_row_matches(got: dict[str, Any], want: dict[str, Any], scale: float) -> None:
    for name in TREND_COLUMNS:
        if name == "mk_trend":
            assert got[name] == want[name], f"mk_trend: got {got[name]}, want {want[name]}"
        elif name == "mk_p":
            assert abs(got[name] - want[name]) <= 1e-12, (got[name], want[name])
        elif name == "trending":
            assert_close(name, got[name], want[name])  # same float ops: ~exact
        elif name == "count":
            assert got[name] == want[name]
        else:
            assert_close(name, got[name], want[name], scale)


def all_rows(events_per_doi: list[list[Event]], duration: Duration) -> list[dict[str, Any]]:
    dois = [f"10.1/{k}" for k in range(len(events_per_doi))]
    cols = columns_of(events_per_doi)
    trends = compute_trends(aggregate_events(cols, len(dois), duration), duration)
    return rows(dois, trends)


# --------------------------------------------------------------------------- strategies


@st.composite
def durations(draw: st.DrawFn) -> Duration:
    windows = draw(st.one_of(st.integers(1, 12), st.just(60)))
    window_s = draw(st.integers(1, 3600))
    span_s = max(1, windows * window_s + draw(st.integers(-window_s, window_s)))
    gravity = draw(st.sampled_from([-0.00036, -2.5e-5, -8.33e-7, -0.5, -1e300, -math.inf]))
    return Duration("test", span_s, gravity, window_s, windows, 0, "* * * * *")


@st.composite
def events_for(draw: st.DrawFn, duration: Duration) -> list[Event]:
    w, span = duration.window_s, duration.span_s
    boundaries = [0.0, float(w), float(span), float(duration.windows * w), float(2 * w)]
    age = st.one_of(
        st.floats(0, span, allow_subnormal=False),
        st.sampled_from(boundaries),
        st.sampled_from(boundaries).map(lambda b: math.nextafter(b, -math.inf)),
        st.sampled_from([-1.0, span + 0.5, float(span + w)]),
    )
    score = st.one_of(
        st.sampled_from([0.0, 1.0, 2.0, 5.0]),
        st.floats(-50, 1000, allow_nan=False, allow_subnormal=False),
    )
    small = st.floats(-1000, 1000, allow_nan=False, allow_subnormal=False)
    event = st.builds(
        Event,
        age=age,
        score=score,
        sentiment_raw=small,
        followers=st.integers(0, 10**6).map(float),
        length=st.integers(0, 280).map(float),
        questions=st.integers(0, 5).map(float),
        exclamations=st.integers(0, 5).map(float),
        bot_rating=small,
        contains_abstract_raw=st.floats(0, 1),
    )
    return draw(st.lists(event, max_size=25))


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Duration, list[list[Event]]]:
    duration = draw(durations())
    n_dois = draw(st.integers(1, 5))
    return duration, [draw(events_for(duration)) for _ in range(n_dois)]


series_value = st.one_of(
    st.sampled_from([0.0, 0.0, 0.0, 1.0, 2.0, 2.5]),
    st.floats(-1e4, 1e6, allow_nan=False, allow_subnormal=False),
)


@st.composite
def series_block(draw: st.DrawFn) -> np.ndarray:
    windows = draw(st.one_of(st.integers(1, 15), st.just(60)))
    n_dois = draw(st.integers(1, 5))
    data = [draw(st.lists(series_value, min_size=windows, max_size=windows)) for _ in range(n_dois)]
    if draw(st.booleans()):
        data[draw(st.integers(0, n_dois - 1))] = [0.0] * windows  # a DOI gone quiet
    return np.array(data, dtype=np.float64)


# --------------------------------------------------------------------------- properties


@PROPERTY
@given(scenario())
def test_rows_match_per_doi_reference(case: tuple[Duration, list[list[Event]]]) -> None:
    """End to end: raw events of several DOIs -> rows, each row equal to its own reference."""
    duration, events_per_doi = case
    got = all_rows(events_per_doi, duration)
    assert len(got) == len(events_per_doi)
    for k, (row, events) in enumerate(zip(got, events_per_doi, strict=True)):
        assert row["doi"] == f"10.1/{k}"
        series = ref_series(events, duration)
        scale = max([1.0, *(abs(v) for v in series), *(abs(e.score) for e in events)])
        assert_row_matches(row, ref_row(events, duration), scale)


@PROPERTY
@given(scenario(), st.integers(0, 2**32 - 1))
def test_aggregates_match_per_doi_loops(case: tuple[Duration, list[list[Event]]], seed: int) -> None:
    """Sums and window series per DOI, whatever the order the store returns events in."""
    duration, events_per_doi = case
    agg = aggregate_events(columns_of(events_per_doi, seed), len(events_per_doi), duration)
    for k, events in enumerate(events_per_doi):
        taking = [e for e in events if 0 <= e.age <= duration.span_s]
        assert agg.count[k] == len(taking)
        scale = sum(abs(e.score) for e in events) + 1.0
        assert_close("sum_age", agg.sum_age[k], sum(e.age for e in taking), duration.span_s)
        assert_close("sum_score", agg.sum_score[k], sum(e.score for e in taking), scale)
        want_decayed = sum(e.score * ref_weight(e.age, duration.gravity) for e in taking)
        assert_close("decayed_score", agg.decayed_score[k], want_decayed, scale)
        for name, field in (
            ("sum_sentiment", "sentiment_raw"),
            ("sum_followers", "followers"),
            ("sum_abstract", "contains_abstract_raw"),
            ("sum_length", "length"),
            ("sum_questions", "questions"),
            ("sum_exclamations", "exclamations"),
            ("sum_bot_rating", "bot_rating"),
        ):
            values = [getattr(e, field) for e in taking]
            # shuffled order sums round differently: slack relative to Σ|values|
            assert_close(name, getattr(agg, name)[k], sum(values), sum(map(abs, values)))
        for j, want in enumerate(ref_series(events, duration)):
            assert_close(f"series[{j}]", agg.series[k, j], want, scale)


@PROPERTY
@given(series_block())
def test_series_statistics_match_references(series: np.ndarray) -> None:
    """Arbitrary series (ties, zeros, large values) against the per-series references."""
    n, windows = series.shape
    duration = replace(CURRENTLY, windows=windows)
    counts = np.arange(n, dtype=np.float64)  # DOI 0 has no events: means must be 0
    sums = {f.name: counts * (k + 1) for k, f in enumerate(fields(Aggregates)) if f.name != "series"}
    agg = Aggregates(**sums, series=series)
    got = rows([str(k) for k in range(n)], compute_trends(agg, duration))
    for k in range(n):
        x = series[k].tolist()
        want = ref_series_stats(x)
        scale = max([1.0, *(abs(v) for v in x)])
        for name, value in want.items():
            if name == "mk_trend":
                assert got[k][name] == value
            elif name == "mk_p":
                assert abs(got[k][name] - value) <= 1e-12
                assert got[k][name] == pytest.approx(value, rel=1e-9, abs=1e-15)
            else:
                assert_close(name, got[k][name], value, scale)
        assert got[k]["trending"] == want["trending"]  # same float ops: bit-identical
        # sum_x = count · (position of the field + 1), so each mean is that position + 1
        means = (got[k]["mean_score"], got[k]["mean_age"], got[k]["abstract_difference"])
        assert means == ((0.0, 0.0, 0.0) if k == 0 else (2.0, 4.0, 7.0))


@settings(max_examples=15, deadline=None)
@given(series_block())
def test_holt_recursion_agrees_with_statsmodels(series: np.ndarray) -> None:
    """The chosen grid pair's forecast equals statsmodels' Holt with the same parameters.

    statsmodels puts its known initial values one step before the first observation, so
    our start (level x_1, trend x_1 − x_0 after window 1) is its fit of ``x[2:]``.
    """
    for x in series:
        if len(x) < 4:
            continue
        forecast, alpha, beta = ref_holt_fit(x.tolist())
        with warnings.catch_warnings():  # its AIC/BIC take log(SSE), and SSE may be 0
            warnings.simplefilter("ignore", RuntimeWarning)
            model = Holt(x[2:], initialization_method="known", initial_level=x[1], initial_trend=x[1] - x[0])
            fitted = model.fit(smoothing_level=alpha, smoothing_trend=beta, optimized=False)
            want = float(fitted.forecast(1)[0])
        assert forecast == pytest.approx(want, rel=1e-9, abs=1e-9 * max(1.0, np.abs(x).max()))
        ours = tm.holt_forecast(x[None, :])[0]
        assert ours == pytest.approx(want, rel=1e-9, abs=1e-9 * max(1.0, np.abs(x).max()))


# --------------------------------------------------------------------------- named cases


def test_single_event_hand_computed() -> None:
    """One event 100 s ago: every column can be worked out on paper."""
    event = Event(
        age=100.0,
        score=2.0,
        sentiment_raw=0.5,
        followers=7,
        length=120,
        questions=1,
        exclamations=2,
        bot_rating=10,
        contains_abstract_raw=0.25,
    )
    (row,) = all_rows([[event]], CURRENTLY)
    alpha = 2 / 11
    assert row["score"] == pytest.approx(2.0 * math.exp(-0.00036 * 100.0), rel=1e-15)
    assert row["count"] == 1 and isinstance(row["count"], int)
    assert (row["mean_sentiment"], row["sum_followers"], row["abstract_difference"]) == (0.5, 7, 0.25)
    assert (row["mean_age"], row["mean_length"], row["mean_score"]) == (100.0, 120.0, 2.0)
    assert (row["mean_questions"], row["mean_exclamations"], row["mean_bot_rating"]) == (1, 2, 10)
    # series = [0]*59 + [2]: mean 1/30, Σ(x - mean)² = 4 - 60/900 = 59/15, /59 = 1/15
    assert row["stddev"] == pytest.approx(math.sqrt(1 / 15), rel=1e-12)
    assert row["ema"] == pytest.approx(2 * alpha, rel=1e-12)
    # ER = |2 - 0| / 2 = 1, sc = (2/3)², kama = 0 + 4/9 · 2
    assert row["ker"] == 1.0
    assert row["kama"] == pytest.approx(8 / 9, rel=1e-12)
    # Holt: zero errors until the last window, error 2 everywhere on the grid (a tie):
    # the first pair (alpha 0.05, beta 0) wins, level 0.05 · 2, trend 0.
    assert row["projected_change"] == pytest.approx(0.1, rel=1e-12)
    # 59 positive slopes among 1770 pairs (rest 0): median 0; S = 59 with 59 tied zeros.
    assert row["trending"] == 0.0
    var_s = (60 * 59 * 125 - 59 * 58 * 123) / 18
    z = 58 / math.sqrt(var_s)
    assert row["mk_trend"] == "no trend"
    assert row["mk_p"] == pytest.approx(2 * (1 - norm.cdf(z)), abs=1e-14)


def test_no_events_in_the_last_windows() -> None:
    """Activity that stopped: the tail of the series is 0, ER is 0, the slope is not > 0."""
    w = CURRENTLY.window_s
    burst = [Event(age=59 * w + 10.0 + k, score=6.0) for k in range(3)]  # oldest window
    steady = [Event(age=(59 - j) * w + 1.0, score=1.0) for j in range(40)]  # windows 0..39
    got = all_rows([burst, steady], CURRENTLY)
    series = [ref_series(burst, CURRENTLY), ref_series(steady, CURRENTLY)]
    assert series[0] == [18.0] + [0.0] * 59
    assert series[1] == [1.0] * 40 + [0.0] * 20
    first, second = got
    assert first["ema"] == pytest.approx(18.0 * (1 - 2 / 11) ** 59, rel=1e-12)
    assert first["ker"] == 0.0 and first["kama"] == 0.0  # seeded with x_9 = 0, then flat
    assert first["trending"] == 0.0
    assert first["mk_trend"] == "no trend"
    # windows 40..49 fall to 0 with ER 1 (sc = 4/9 each), then 10 flat steps at slow²
    assert second["ker"] == 0.0
    assert second["kama"] == pytest.approx((5 / 9) ** 10 * (1 - (2 / 31) ** 2) ** 10, rel=1e-12)
    assert second["mk_trend"] == "decreasing"
    assert second["trending"] == 0.0  # the median pair is flat (both 1 or both 0)
    for row, events in zip(got, [burst, steady], strict=True):
        assert_row_matches(row, ref_row(events, CURRENTLY), 18.0)


def test_all_events_at_now() -> None:
    """Age 0: weight exactly 1, last window, mean age 0."""
    events = [Event(age=0.0, score=s) for s in (1.0, 2.0, 3.0)]
    (row,) = all_rows([events], CURRENTLY)
    assert row["score"] == 6.0
    assert row["mean_age"] == 0.0
    agg = aggregate_events(columns_of([events]), 1, CURRENTLY)
    assert agg.series[0, -1] == 6.0 and not agg.series[0, :-1].any()
    assert row["mk_trend"] == "no trend"  # S = 59, z ≈ 1.67
    assert_row_matches(row, ref_row(events, CURRENTLY), 6.0)


def test_extreme_ages_and_gravities() -> None:
    """Age = span counts (outside the series); beyond span and the future do not count;
    huge and infinite gravities give weight 0 for any positive age, 1 at age 0."""
    span = YEAR.span_s
    events = [
        Event(age=float(span), score=3.0),  # exactly span: counts, not in the series
        Event(age=span + 1.0, score=1000.0),  # outside the span
        Event(age=-5.0, score=1000.0),  # in the future (clock skew): outside
        Event(age=1.0, score=4.0),
    ]
    (row,) = all_rows([events], YEAR)
    assert row["count"] == 2
    want = 3.0 * math.exp(YEAR.gravity * span) + 4.0 * math.exp(YEAR.gravity)
    assert row["score"] == pytest.approx(want, rel=1e-14)
    agg = aggregate_events(columns_of([events]), 1, YEAR)
    assert agg.series.sum() == 4.0

    events = [Event(age=0.0, score=2.0), Event(age=1e-300, score=5.0), Event(age=3600.0, score=7.0)]
    for gravity, want in ((-math.inf, 2.0), (-1e300, 2.0 + 5.0 / math.e), (-1e6, 7.0)):
        (row,) = all_rows([events], replace(CURRENTLY, gravity=gravity))
        assert row["score"] == pytest.approx(want, rel=1e-15)
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def test_window_boundaries_are_exact() -> None:
    """Age k·w belongs to window windows-1-k; the float just below to the window after."""
    w = CURRENTLY.window_s
    for k in (1, 7, 59):
        on = Event(age=float(k * w), score=1.0)
        below = Event(age=math.nextafter(k * w, 0.0), score=10.0)
        agg = aggregate_events(columns_of([[on, below]]), 1, CURRENTLY)
        assert agg.series[0, 59 - k] == 1.0
        assert agg.series[0, 60 - k] == 10.0
    beyond = aggregate_events(columns_of([[Event(age=60.0 * w, score=1.0)]]), 1, CURRENTLY)
    assert not beyond.series.any() and beyond.count[0] == 1


def test_empty_input() -> None:
    cols = columns_of([])
    agg = aggregate_events(cols, 0, CURRENTLY)
    assert agg.series.shape == (0, 60) and agg.count.shape == (0,)
    trends = compute_trends(agg, CURRENTLY)
    assert len(trends) == 0
    assert all(getattr(trends, name).shape == (0,) for name in TREND_COLUMNS)
    assert rows([], trends) == []


def test_dois_without_events_are_valid_rows() -> None:
    got = all_rows([[], [Event(age=10.0, score=1.0)], []], CURRENTLY)
    for row in (got[0], got[2]):
        assert row == {
            "doi": row["doi"],
            "score": 0.0,
            "count": 0,
            "mean_sentiment": 0.0,
            "sum_followers": 0.0,
            "abstract_difference": 0.0,
            "mean_age": 0.0,
            "mean_length": 0.0,
            "mean_questions": 0.0,
            "mean_exclamations": 0.0,
            "mean_bot_rating": 0.0,
            "mean_score": 0.0,
            "stddev": 0.0,
            "ema": 0.0,
            "kama": 0.0,
            "ker": 0.0,
            "projected_change": 0.0,
            "trending": 0.0,
            "mk_trend": "no trend",
            "mk_p": 1.0,
        }
    assert got[1]["count"] == 1


def test_single_window_and_two_windows() -> None:
    one = replace(CURRENTLY, windows=1)
    (row,) = all_rows([[Event(age=5.0, score=3.0)]], one)
    assert (row["stddev"], row["ker"], row["trending"], row["mk_p"]) == (0.0, 0.0, 0.0, 1.0)
    assert row["ema"] == row["kama"] == row["projected_change"] == 3.0
    two = replace(CURRENTLY, windows=2)
    w = two.window_s
    (row,) = all_rows([[Event(age=w + 1.0, score=1.0), Event(age=1.0, score=4.0)]], two)
    assert row["projected_change"] == 7.0  # 2·x_1 − x_0
    assert row["trending"] == 3.0
    assert row["ker"] == 1.0


def test_constant_and_linear_series() -> None:
    """Perfect fits: every grid pair has SSE 0, the forecast is the obvious one."""
    series = np.array([[5.0] * 60, [2.0 * t + 1 for t in range(60)]])
    agg = Aggregates(**{f.name: np.ones(2) for f in fields(Aggregates) if f.name != "series"}, series=series)
    trends = compute_trends(agg, CURRENTLY)
    assert trends.projected_change.tolist() == [5.0, 121.0]
    assert trends.trending.tolist() == [0.0, 2.0]
    assert trends.mk_trend.tolist() == ["no trend", "increasing"]
    assert trends.ker.tolist() == [0.0, 1.0]
    assert trends.stddev[0] == 0.0


def test_p_value_matches_scipy_normal() -> None:
    z = np.linspace(-12, 12, 48001)
    want = 2 * (1 - ndtr(np.abs(z)))
    got = tm.two_sided_p(z)
    assert np.max(np.abs(got - want)) < 5e-15
    assert (got[np.abs(z) > 8.3] == 0.0).all() and (want[np.abs(z) > 8.3] == 0.0).all()
    assert float(norm.ppf(1 - tm.MK_ALPHA / 2)) == tm.MK_Z_CRITICAL


def test_median_rows_equals_numpy_median() -> None:
    rng = np.random.default_rng(7)
    for width in (1, 2, 3, 1770, 1771):
        values = rng.integers(-3, 4, (40, width)).astype(np.float64) / 7
        assert (tm._median_rows(values.copy()) == np.median(values, axis=1)).all()


def test_columns_and_rows_shape() -> None:
    assert len(TREND_COLUMNS) == 19
    (row,) = all_rows([[Event(age=1.0, score=1.0)] * 3], CURRENTLY)
    assert list(row) == ["doi", *TREND_COLUMNS]
    assert all(type(row[name]) is float for name in TREND_COLUMNS if name not in ("count", "mk_trend"))
    with pytest.raises(ValueError, match="DOIs"):
        rows(["a", "b"], compute_trends(aggregate_events(columns_of([[]]), 1, CURRENTLY), CURRENTLY))


def test_invalid_aggregates_are_rejected() -> None:
    good = aggregate_events(columns_of([[Event(age=1.0, score=1.0)]]), 1, CURRENTLY)
    with pytest.raises(ValueError, match="series has shape"):
        compute_trends(replace(good, series=np.zeros((1, 59))), CURRENTLY)
    with pytest.raises(ValueError, match="NaN"):
        compute_trends(replace(good, sum_age=np.array([math.nan])), CURRENTLY)
    with pytest.raises(ValueError, match="'count' has shape"):
        compute_trends(replace(good, count=np.zeros(2)), CURRENTLY)
