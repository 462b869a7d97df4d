"""The reference trend inputs (``worker.core.reference``), event by event, against a
vectorized aggregation of the same events (``tests.support.event_columns``): two implementations of one definition
(``worker.core.alignment``) that share no code must agree, edges and sub-seconds included."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.event_columns import aggregate_points
from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.core.events import Point
from worker.core.reference import decay_weight, reference_aggregates

pytestmark = pytest.mark.unit

S = alignment.NS_PER_S
NOW = 1_700_000_000 * S
DOIS = ["10.1/a", "10.1/b", "10.1/c"]
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_same(got: Aggregates, want: Aggregates) -> None:
    for name in Aggregates.__dataclass_fields__:
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-9, err_msg=name)


def event(i: int, doi: str, time_ns: int, score: float) -> Point:
    return Point(f"e{i}", doi, time_ns, score, (i % 5 - 2) / 4, 10 * i, 100 + i, i % 2, i % 3, i / 8, i % 4 / 4,
                 0.0, 0.0, 0.0, 0.0)


@st.composite
def events(draw: st.DrawFn) -> tuple[Duration, list[Point]]:
    duration = draw(st.sampled_from(DEFAULT_DURATIONS))
    w = duration.window_s
    # Ages near the edges (window edges, span ends, after now) and anywhere, with sub-seconds.
    edge = st.sampled_from([-1, 0, w - 1, w, 2 * w, duration.span_s - 1, duration.span_s, duration.span_s + 1])
    back = st.one_of(edge, st.integers(-5, duration.span_s + 5))
    fraction = st.sampled_from([0, 1_000, 500_000_000, 999_999_000])
    drawn = draw(st.lists(st.tuples(back, fraction, st.sampled_from(DOIS), st.floats(0, 100, width=32)),
                          max_size=40))
    return duration, [event(i, doi, NOW - b * S + f, score) for i, (b, f, doi, score) in enumerate(drawn)]


@PROPERTY
@given(events())
def test_the_reference_equals_the_trend_maths_aggregation(case: tuple[Duration, list[Point]]) -> None:
    duration, points = case
    assert_same(reference_aggregates(points, DOIS, NOW, duration), aggregate_points(points, DOIS, NOW, duration))


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_edges_of_the_real_durations(duration: Duration) -> None:
    w, span = duration.window_s, duration.span_s
    points = [event(i, "10.1/a", NOW - back * S + fraction, 1.0 + i)
              for i, (back, fraction) in enumerate([(0, 0), (0, 999_999_000), (-1, 0), (w, 0), (w - 1, 999_999_000),
                                                    (span, 0), (span, 999_999_000), (span + 1, 999_999_000)])]
    got = reference_aggregates(points, ["10.1/a"], NOW, duration)
    assert got.count.tolist() == [6.0]  # the second after now and the second before the span are out
    # age 0 twice (scores 1, 2), age w-1 (5) in the newest window; age w (4) in the one before;
    # the span's start (6, 7) is one window past the series.
    assert got.series[0, -1] == 1.0 + 2.0 + 5.0
    assert got.series[0, -2] == 4.0
    assert got.series.sum() == 12.0
    assert got.sum_age.tolist() == [float(w + w - 1 + 2 * span)]
    assert_same(got, aggregate_points(points, ["10.1/a"], NOW, duration))


def test_dois_without_events_get_zeros_and_other_dois_are_ignored() -> None:
    duration = DEFAULT_DURATIONS[0]
    got = reference_aggregates([event(1, "10.1/other", NOW, 5.0), event(2, "10.1/a", NOW, 2.0)],
                               ["10.1/a", "10.1/none"], NOW, duration)
    assert got.count.tolist() == [1.0, 0.0]
    assert got.sum_score.tolist() == [2.0, 0.0]
    assert not got.series[1].any()


def test_the_run_time_must_be_a_whole_second_and_dois_unique() -> None:
    duration = DEFAULT_DURATIONS[0]
    with pytest.raises(ValueError, match="whole second"):
        reference_aggregates([], DOIS, NOW + 1, duration)
    with pytest.raises(ValueError, match="duplicate"):
        reference_aggregates([], ["10.1/a", "10.1/a"], NOW, duration)


def test_decay_weight() -> None:
    assert decay_weight(0, -math.inf) == 1.0
    assert decay_weight(10, -math.inf) == 0.0
    assert decay_weight(10, -0.1) == math.exp(-1.0)
    assert decay_weight(10**9, -1.0) == 0.0
