"""One truth across stores: which events take part in a run, and in which window, to the second.

PostgreSQL keeps an event's microseconds; InfluxDB replaces the sub-second part with a hash
offset (``event_timestamp_ns``). ``worker.core.alignment`` defines span and windows on the
event's whole second, as half-open ranges of the stored time that start and end on whole
seconds, so both stores decide alike. These properties check that, without a server:

* the PostgreSQL ranges on the microsecond times and the Flux ranges and windows on the hash
  stamps select exactly the events whose whole-second age the math puts in the span and
  window (simulating ``range`` and ``aggregateWindow(offset:, timeSrc: "_stop")``, as the
  query of ``flux.trend_inputs_query`` uses them);
* the series assembled from Flux's windows (``influx._fill_trend_inputs``) equals
  ``tests.support.event_columns.window_series`` on the whole-second ages.

The live tests (``tests/store/test_trend_inputs_contract.py`` with ``INFLUXDB_V2_URL``) check the
same on a real server.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.event_columns import window_series
from worker.core import alignment
from worker.core.alignment import NS_PER_S
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.core.events import Point
from worker.store.influx import flux
from worker.store.influx.lineprotocol import event_timestamp_ns
from worker.store.influx.store import _fill_trend_inputs

pytestmark = pytest.mark.unit

NOW = 1_700_000_000 * NS_PER_S
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def point(event_id: str, time_ns: int, score: float = 1.0) -> Point:
    return Point(event_id, "10.1/x", time_ns, score, 0.0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


# --------------------------------------------------------------------------- the definitions


def test_run_time_is_the_whole_second() -> None:
    assert alignment.whole_second_ns(NOW + 999_999_999) == NOW
    assert alignment.whole_second_ns(NOW) == NOW
    assert alignment.whole_second_ns(-1) == -NS_PER_S


def test_a_run_time_with_a_fraction_is_refused() -> None:
    duration = DEFAULT_DURATIONS[0]
    for call in (alignment.span_range, alignment.series_range):
        with pytest.raises(ValueError, match="whole second"):
            call(duration, NOW + 1_000)


def test_edges_belong_to_the_older_window_and_the_span_ends_are_inclusive() -> None:
    duration = Duration("d", 600, -0.001, 60, 10, 0, "* * * * *")
    edge = NOW - 60 * NS_PER_S
    for fraction in (0, 1, 999_999_999):  # the whole second decides, not the fraction
        assert alignment.window_back(duration, NOW, edge + fraction) == 1
        assert alignment.window_back(duration, NOW, edge + NS_PER_S + fraction) == 0
        assert alignment.in_span(duration, NOW, NOW + fraction)
        assert alignment.in_span(duration, NOW, NOW - 600 * NS_PER_S + fraction)
        assert not alignment.in_span(duration, NOW, NOW + NS_PER_S + fraction)
        assert not alignment.in_span(duration, NOW, NOW - 601 * NS_PER_S + fraction)
    assert alignment.window_back(duration, NOW, NOW - 600 * NS_PER_S) is None  # in the span, not the series
    assert alignment.span_range(duration, NOW) == (NOW - 600 * NS_PER_S, NOW + NS_PER_S)
    # 1_700_000_001 s mod 60 s = 21 s: the windows are cut 21 s after every full minute
    assert alignment.series_range(duration, NOW) == (NOW - 599 * NS_PER_S, NOW + NS_PER_S, 21 * NS_PER_S)


# --------------------------------------------------------------------------- the stores' semantics


def postgres_selects(duration: Duration, now_ns: int, time_ns: int) -> bool:
    """The SQL's range on PostgreSQL's microsecond time (``time >= start AND time < stop``)."""
    start, stop = alignment.span_range(duration, now_ns)
    stored = time_ns - time_ns % 1000
    return start // 1000 <= stored // 1000 < stop // 1000


def postgres_window(duration: Duration, now_ns: int, time_ns: int) -> int:
    """The SQL's window: whole-second age (``date_trunc('second', time)``) divided by w."""
    stored = time_ns - time_ns % 1000
    age = (now_ns - (stored - stored % NS_PER_S)) // NS_PER_S
    return age // duration.window_s


def flux_selects(duration: Duration, now_ns: int, stamp: int) -> bool:
    start, stop = alignment.span_range(duration, now_ns)
    return start <= stamp < stop


def flux_series(duration: Duration, now_ns: int, stamps: list[int], scores: list[float]) -> dict[int, float]:
    """``range(series) |> aggregateWindow(every: w, offset:, createEmpty: true, timeSrc: "_stop")``."""
    start, stop, offset = alignment.series_range(duration, now_ns)
    width = duration.window_s * NS_PER_S
    sums: dict[int, float] = defaultdict(float)
    window_start = start
    while window_start < stop:  # createEmpty: every window of the range exists
        sums[min(window_start + width, stop)] += 0.0
        window_start += width
    for stamp, score in zip(stamps, scores, strict=True):
        if start <= stamp < stop:
            w_start = stamp - (stamp - offset) % width
            sums[min(w_start + width, stop)] += score
    return sums


class _Record:
    def __init__(self, values: dict[str, object]) -> None:
        self.values = values


# --------------------------------------------------------------------------- properties


@st.composite
def scenario(draw: st.DrawFn) -> tuple[Duration, int, list[Point]]:
    windows = draw(st.integers(1, 12))
    window_s = draw(st.integers(1, 90))
    span_s = max(1, windows * window_s + draw(st.integers(-window_s, window_s)))
    duration = Duration("t", span_s, -0.001, window_s, windows, 0, "* * * * *")
    now = NOW + draw(st.integers(0, 10**6)) * NS_PER_S
    edges = [0, window_s, 2 * window_s, windows * window_s, span_s, span_s + 1, -1]
    seconds_back = st.one_of(st.sampled_from(edges), st.integers(-3, span_s + 3 * window_s))
    fraction = st.one_of(st.sampled_from([0, 1, 999, 1000, 500_000_000, 999_999_999]),
                         st.integers(0, NS_PER_S - 1))
    points = [
        point(f"e{i}", now - back * NS_PER_S + frac, draw(st.sampled_from([1.0, 2.0, 3.5])))
        for i, (back, frac) in enumerate(draw(st.lists(st.tuples(seconds_back, fraction), max_size=30)))
    ]
    return duration, now, points


@PROPERTY
@given(scenario())
def test_both_stores_select_the_events_the_math_counts(case: tuple[Duration, int, list[Point]]) -> None:
    duration, now, points = case
    for p in points:
        expected = alignment.in_span(duration, now, p.time_ns)
        assert postgres_selects(duration, now, p.time_ns) == expected, p
        assert flux_selects(duration, now, event_timestamp_ns(p)) == expected, p
        if expected:  # the SQL's window index; >= windows: in the span, older than the series
            back = alignment.window_back(duration, now, p.time_ns)
            k = postgres_window(duration, now, p.time_ns)
            assert k == back if back is not None else k >= duration.windows, p


@PROPERTY
@given(scenario())
def test_the_flux_series_equals_the_math_on_whole_second_ages(case: tuple[Duration, int, list[Point]]) -> None:
    check_series(*case)


def check_series(duration: Duration, now: int, points: list[Point]) -> None:
    stamps = [event_timestamp_ns(p) for p in points]
    simulated = flux_series(duration, now, stamps, [p.score for p in points])
    assert len(simulated) == duration.windows
    records = [_Record({"result": "series", "doi": "d", "time_ns": t, "_value": v}) for t, v in simulated.items()]
    sums = {name: np.zeros(1) for name in (*flux.SUM_FIELDS.values(), "decayed_score", "sum_age")}
    series = np.zeros((1, duration.windows))
    _fill_trend_inputs(records, {"d": 0}, duration, now, sums, series)  # type: ignore[arg-type]

    ages = np.array([float(alignment.age_s(now, p.time_ns)) for p in points])
    expected = window_series(np.zeros(len(points), dtype=np.int64), ages, np.array([p.score for p in points]),
                             1, duration)
    np.testing.assert_array_equal(series, expected)


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_the_real_durations_at_their_edges(duration: Duration) -> None:
    """Every window edge and both span ends of the product's durations, with the sub-second
    parts that used to move an event across an edge (the stored hash offset vs. the event's
    own fraction)."""
    width = duration.window_s
    backs = [k * width for k in range(duration.windows + 1)] + [duration.span_s, duration.span_s + 1, -1]
    points = [
        point(f"{back}/{frac}", NOW - back * NS_PER_S + frac)
        for back in backs
        for frac in (0, 1000, 300_000_000, 999_999_000)
    ]
    for p in points:
        assert flux_selects(duration, NOW, event_timestamp_ns(p)) == alignment.in_span(duration, NOW, p.time_ns)
        assert postgres_selects(duration, NOW, p.time_ns) == alignment.in_span(duration, NOW, p.time_ns)
    check_series(duration, NOW, points)


def test_a_runs_time_from_the_command_line_or_beat_is_floored() -> None:
    from worker.trends.planning import run_time_ns

    assert run_time_ns("2023-11-14T22:13:20.999999+00:00") == NOW
    assert run_time_ns("2023-11-14T22:13:20") == NOW  # no offset: UTC
    assert run_time_ns() % NS_PER_S == 0
