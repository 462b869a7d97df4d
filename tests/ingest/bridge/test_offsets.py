"""The bridge's offset bookkeeping and flow policies, pure, with a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.ingest.bridge.flow import Backoff, Backpressure
from worker.ingest.bridge.offsets import OffsetTracker

pytestmark = pytest.mark.unit


def test_commit_point_is_the_end_of_the_confirmed_prefix() -> None:
    tracker = OffsetTracker(60)
    tracker.track(0, 0, 9, now=0)
    tracker.track(0, 10, 19, now=0)
    tracker.track(0, 20, 29, now=0)
    assert tracker.commit_points() == {}
    assert tracker.confirm(0, 10, 19) == 1  # later batch first: the commit point must wait
    assert tracker.commit_points() == {}
    tracker.confirm(0, 0, 9)
    assert tracker.commit_points() == {0: 20}
    assert tracker.commit_points() == {}  # handed out once
    tracker.confirm(0, 20, 29)
    assert tracker.commit_points() == {0: 30}
    assert tracker.in_flight() == 0


def test_a_confirmation_covers_every_span_inside_its_range() -> None:
    tracker = OffsetTracker(60)
    tracker.track(3, 5, 7, now=0)
    tracker.track(3, 8, 12, now=0)
    assert tracker.confirm(3, 0, 100) == 2
    assert tracker.commit_points() == {3: 13}
    assert tracker.confirm(3, 0, 100) == 0  # a repeated confirmation changes nothing


def test_a_batch_of_dead_letters_only_needs_no_confirmation() -> None:
    tracker = OffsetTracker(60)
    tracker.track(0, 0, 4, now=0, confirmed=True)
    assert tracker.commit_points() == {0: 5}


def test_an_unconfirmed_batch_is_overdue_at_its_deadline_and_rewinds_with_more_patience() -> None:
    tracker = OffsetTracker(60)
    tracker.track(0, 0, 9, now=0)
    tracker.track(0, 10, 19, now=5)
    tracker.confirm(0, 10, 19)
    assert tracker.overdue(59.9) == {}
    assert tracker.overdue(60) == {0: 0}
    assert tracker.rewind(0) == 0  # the confirmed batch behind it is read again too
    assert tracker.in_flight() == 0 and tracker.overdue(1000) == {}
    assert tracker.timeout(0) == 120  # doubled after a rewind ...
    tracker.track(0, 0, 19, now=100)
    assert tracker.overdue(219) == {} and tracker.overdue(220) == {0: 0}
    tracker.confirm(0, 0, 19)
    assert tracker.timeout(0) == 60  # ... and back once a batch is confirmed


def test_a_slow_store_cannot_stretch_the_re_read_past_four_timeouts() -> None:
    """Rewind after rewind (the store too slow to confirm anything), a lost batch is still
    read again within 4x the timeout, and the first confirmation brings 1x back."""
    tracker = OffsetTracker(60)
    now = 0.0
    for _ in range(10):
        tracker.track(0, 0, 9, now=now)
        assert tracker.overdue(now + 240) == {0: 0}
        now += tracker.timeout(0)
        tracker.rewind(0)
    assert tracker.timeout(0) == 240
    tracker.track(0, 0, 9, now=now)
    tracker.confirm(0, 0, 9)
    tracker.track(0, 10, 19, now=now)
    assert tracker.overdue(now + 60) == {0: 10}


def test_a_sign_of_life_moves_the_deadline() -> None:
    tracker = OffsetTracker(60)
    tracker.track(1, 0, 9, now=0)
    tracker.alive(1, 0, 9, now=50)
    assert tracker.overdue(100) == {}
    assert tracker.overdue(110) == {1: 0}
    assert tracker.oldest_unconfirmed_age(110) == 110


def test_forgotten_partitions_leave_no_trace() -> None:
    tracker = OffsetTracker(60)
    tracker.track(0, 0, 9, now=0)
    tracker.track(1, 0, 9, now=0, confirmed=True)
    tracker.forget([0, 1])
    assert tracker.commit_points() == {} and tracker.in_flight() == 0 and tracker.pending_partitions() == []


def test_overlapping_spans_are_a_bug() -> None:
    tracker = OffsetTracker(60)
    tracker.track(0, 0, 9, now=0)
    with pytest.raises(ValueError, match="overlaps"):
        tracker.track(0, 9, 12, now=0)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=30), data=st.data())
def test_never_commits_past_an_unconfirmed_offset(sizes: list[int], data: st.DataObject) -> None:
    """Whatever the order of confirmations, the commit point is exactly the first offset of
    the first unconfirmed batch (or the end, when all are confirmed)."""
    tracker = OffsetTracker(60)
    spans, first = [], 0
    for size in sizes:
        spans.append((first, first + size - 1))
        tracker.track(0, first, first + size - 1, now=0)
        first += size
    order = data.draw(st.permutations(range(len(spans))))
    confirmed: set[int] = set()
    committed = 0
    for index in order[: data.draw(st.integers(0, len(order)))]:
        confirmed.add(index)
        tracker.confirm(0, *spans[index])
        committed = tracker.commit_points().get(0, committed)
        prefix = next((i for i in range(len(spans)) if i not in confirmed), len(spans))
        expected = spans[prefix][0] if prefix < len(spans) else first
        assert committed == expected or (prefix == 0 and committed == 0)


def test_backpressure_has_hysteresis_on_depth_and_in_flight() -> None:
    flow = Backpressure(high_watermark=10, low_watermark=2, max_in_flight=8)
    assert not flow.update(queue_depth=9, in_flight=7)
    assert flow.update(queue_depth=10, in_flight=0) and flow.reason == "queue"
    assert flow.update(queue_depth=3, in_flight=0)  # not yet at the low watermark
    assert not flow.update(queue_depth=2, in_flight=0)
    assert flow.update(queue_depth=0, in_flight=8) and flow.reason == "in_flight"
    assert flow.update(queue_depth=0, in_flight=5)  # resumes at half the in-flight limit
    assert not flow.update(queue_depth=0, in_flight=4)


def test_backpressure_pauses_at_the_redis_memory_watermark_and_resumes_below_it() -> None:
    flow = Backpressure(high_watermark=10, low_watermark=2, max_in_flight=8, memory_high=0.8)
    assert not flow.update(queue_depth=0, in_flight=0, memory_ratio=0.79)
    assert flow.update(queue_depth=0, in_flight=0, memory_ratio=0.8) and flow.reason == "redis_memory"
    assert flow.update(queue_depth=0, in_flight=0, memory_ratio=0.76)  # hysteresis: 5% of maxmemory
    assert not flow.update(queue_depth=0, in_flight=0, memory_ratio=0.75)
    assert not flow.update(queue_depth=0, in_flight=0)  # no maxmemory: the ratio is 0, depth alone counts
    with pytest.raises(ValueError, match="memory_high"):
        Backpressure(high_watermark=10, low_watermark=2, max_in_flight=8, memory_high=1.5)


def test_backoff_doubles_caps_and_resets() -> None:
    backoff = Backoff(initial_s=0.5, maximum_s=4.0)
    assert [backoff.failure(now=0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.blocked(3.9) and not backoff.blocked(4.0)
    backoff.success()
    assert not backoff.blocked(0) and backoff.failure(10) == 0.5
