"""The dead-letter guard's arithmetic, pure, with a fake clock: properties against a
brute-force reference (the ratio over the last N events), and the bounds the docs promise."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.ingest.bridge.dlq_guard import DlqGuard

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def first_trip_reference(flags: list[bool], ratio: float, window: int) -> int | None:
    """Index of the first event at which more than ``ratio`` of the last ``window`` events
    (a full window) were invalid, computed from scratch at every position."""
    for i in range(window - 1, len(flags)):
        if sum(flags[i - window + 1: i + 1]) > ratio * window:
            return i
    return None


streams = st.lists(st.booleans(), max_size=300)
ratios = st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9, 1.0]) | st.floats(0.01, 1.0)
windows = st.integers(1, 60)
gaps = st.lists(st.floats(0.0, 30.0, allow_nan=False), min_size=300, max_size=300)


@given(streams, ratios, windows, gaps)
def test_trips_exactly_where_the_ratio_over_a_full_window_is_exceeded(
        flags: list[bool], ratio: float, window: int, waits: list[float]) -> None:
    guard, clock = DlqGuard(ratio, window), FakeClock()
    times, tripped_at = [], None
    for i, invalid in enumerate(flags):
        times.append(clock.tick(waits[i]))
        trip = guard.observe(0, i, clock.now, "bad field" if invalid else None)
        if trip is not None:
            assert tripped_at is None, "trips once"
            tripped_at = i
            assert trip.invalid > ratio * window and trip.window == window
            assert trip.at == clock.now
            assert trip.window_s == pytest.approx(clock.now - times[i - window + 1])
    assert tripped_at == first_trip_reference(flags, ratio, window)


@given(st.lists(st.booleans(), max_size=400), st.floats(0.01, 0.99), windows)
def test_a_stream_turning_fully_invalid_stops_after_at_most_ratio_x_window_plus_one_dead_letters(
        history: list[bool], ratio: float, window: int) -> None:
    guard = DlqGuard(ratio, window)
    offset = 0
    for invalid in history:
        if guard.observe(0, offset, 0.0, "x" if invalid else None):
            return  # the history alone tripped it: nothing to say about what follows
        offset += 1
    letters = 0
    while guard.tripped is None:
        guard.observe(0, offset, 0.0, "now everything is invalid")
        offset += 1
        letters += 1
    bound = window if len(history) < window else math.floor(ratio * window) + 1
    assert letters <= bound


@given(streams, windows)
def test_ratio_one_never_trips(flags: list[bool], window: int) -> None:
    guard = DlqGuard(1.0, window)
    assert not guard.enabled
    assert all(guard.observe(0, i, 0.0, "x" if f else None) is None for i, f in enumerate(flags))


@given(st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=200), windows, st.floats(0.01, 0.99))
def test_an_offset_read_again_counts_once(reads: list[tuple[int, bool]], window: int, ratio: float) -> None:
    """Read every partition's offsets, then read them all again (a rewind): the second
    reading changes nothing, so the guard decides as on the first alone."""
    once, twice = DlqGuard(ratio, window), DlqGuard(ratio, window)
    offsets: dict[int, int] = {}
    seen = []
    for partition, invalid in reads:
        offset = offsets[partition] = offsets.get(partition, -1) + 1
        seen.append((partition, offset, invalid))
        once.observe(partition, offset, 0.0, "x" if invalid else None)
        twice.observe(partition, offset, 0.0, "x" if invalid else None)
    for partition, offset, invalid in seen:
        twice.observe(partition, offset, 0.0, "x" if not invalid else None)  # even with another verdict
    assert (twice.tripped is None) == (once.tripped is None) and twice.ratio() == once.ratio()


def test_reset_judges_again_from_an_empty_window_and_keeps_the_counted_offsets() -> None:
    guard = DlqGuard(0.5, 4)
    for offset in range(3):
        assert guard.observe(0, offset, 0.0, "bad") is None  # window not full yet
    trip = guard.observe(0, 3, 1.0, "worse")
    assert trip is not None and trip.invalid == 4 and trip.reasons == ("bad", "worse")
    assert guard.observe(0, 4, 2.0, "bad") is None, "nothing is counted while tripped"
    guard.reset()
    assert guard.tripped is None and guard.ratio() == 0.0
    assert guard.observe(0, 2, 3.0, "bad") is None and guard.ratio() == 0.0, "counted before the trip"
    for offset in range(4, 7):
        assert guard.observe(0, offset, 3.0, "bad") is None
    assert guard.observe(0, 7, 3.0, "bad") is not None


def test_the_trip_says_why_in_one_line() -> None:
    guard = DlqGuard(0.5, 4)
    reasons = ["missing required field `score`", "not valid JSON", "missing required field `score`", "x"]
    trip = None
    for offset, reason in enumerate(reasons):
        trip = guard.observe(0, offset, 10.0 + offset, reason)
    assert trip is not None
    text = trip.describe()
    assert "\n" not in text
    assert text.startswith("4 of the last 4 events were dead-lettered (100% > BRIDGE_MAX_DLQ_RATIO 0.5, over 3.0 s)")
    assert text.endswith("not valid JSON; missing required field `score`; x")


@pytest.mark.parametrize(("ratio", "window"), [(0.0, 10), (1.5, 10), (0.5, 0)])
def test_bad_parameters_are_refused(ratio: float, window: int) -> None:
    with pytest.raises(ValueError):
        DlqGuard(ratio, window)
