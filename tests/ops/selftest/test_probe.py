"""The self-test's probe (``worker.ops.selftest.probe``): the cases the issue asks for are in it,
and what the store must answer about them follows from the definitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from worker.core import alignment
from worker.core.durations import DEFAULT_DURATIONS, Duration, build_durations
from worker.core.events import decode_event
from worker.core.partitions import EVENTS, days_of_ns
from worker.ops.selftest.influx import PROBE_MAX_AGE_S
from worker.ops.selftest.probe import POSTGRES_NOW_NS, PREFIX, Probe, build_probe, edge_offsets, upstream_event
from worker.store.influx.lineprotocol import event_timestamp_ns

pytestmark = pytest.mark.unit

S = alignment.NS_PER_S
INFLUX_NOW = 1_780_000_000 * S
PROBE = build_probe(DEFAULT_DURATIONS, POSTGRES_NOW_NS)


def test_the_postgres_probe_lies_in_the_year_2000_under_its_own_prefix() -> None:
    assert datetime.fromtimestamp(POSTGRES_NOW_NS // S, UTC) == datetime(2000, 7, 31, 12, tzinfo=UTC)
    assert all(p.doi.startswith(PREFIX) for p in PROBE.events)
    assert PROBE.dois == sorted(f"{PREFIX}{name}" for name in (
        "busy", "steady", "quiet", *(f"edges-{d.name}" for d in DEFAULT_DURATIONS)))
    # Two month partitions: the year span's start and the run's own month.
    months = EVENTS.ranges_of_days(days_of_ns(p.time_ns for p in PROBE.events))
    assert [EVENTS.name(m) for m in months] == ["discussion_event_p19990801", "discussion_event_p20000701"]
    start, stop = PROBE.time_range_ns()
    assert all(start <= p.time_ns < stop for p in PROBE.events)


def test_a_redelivered_event_and_two_events_in_one_second() -> None:
    first, second = PROBE.batches
    assert PROBE.redelivered in first and second[0] == PROBE.redelivered
    assert PROBE.written == len(PROBE.events) + 1
    assert sorted((*first, *second[1:]), key=PROBE.events.index) == list(PROBE.events)
    assert len({p.event_id for p in PROBE.events}) == len(PROBE.events)
    a, b = (p for p in PROBE.events if p.event_id.startswith("selftest:busy:same-second-"))
    assert a.doi == b.doi and a.event_id != b.event_id and a.time_ns != b.time_ns
    assert alignment.whole_second_ns(a.time_ns) == alignment.whole_second_ns(b.time_ns)
    assert PROBE.counts()[f"{PREFIX}busy"] == sum(p.doi == f"{PREFIX}busy" for p in PROBE.events)


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_qualifying_sits_on_both_sides_of_min_events(duration: Duration) -> None:
    counts = PROBE.in_span(duration)
    largest = max(d.min_events for d in DEFAULT_DURATIONS)
    smallest = min(d.min_events for d in DEFAULT_DURATIONS)
    assert counts[f"{PREFIX}steady"] == largest + 1
    assert counts[f"{PREFIX}quiet"] == smallest  # "more than min_events": just out where min_events is smallest
    assert PROBE.qualifying(duration) == [f"{PREFIX}busy", f"{PREFIX}steady"]


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_every_edge_is_probed_on_its_exact_second(duration: Duration) -> None:
    edges = [p for p in PROBE.events if p.doi == f"{PREFIX}edges-{duration.name}"]
    ages = {alignment.age_s(PROBE.now_ns, p.time_ns) for p in edges}
    w = duration.window_s
    assert {-1, 0, w - 1, w, duration.span_s, duration.span_s + 1} <= ages
    inside = [p for p in edges if alignment.in_span(duration, PROBE.now_ns, p.time_ns)]
    assert len(edges) - len(inside) == 2  # the second after now, the second before the span
    backs = {alignment.window_back(duration, PROBE.now_ns, p.time_ns) for p in inside}
    assert {0, 1, duration.windows - 1, None} <= backs  # None: the span's start, past the series
    # Sub-second parts: an event half a second after now counts at now.
    assert any(p.time_ns == PROBE.now_ns + S // 2 for p in inside)


def test_the_reference_answers_of_the_probe() -> None:
    currently = DEFAULT_DURATIONS[0]
    want = PROBE.reference(currently)
    busy = PROBE.dois.index(f"{PREFIX}busy")
    assert want.count[busy] == PROBE.in_span(currently)[f"{PREFIX}busy"] == 34
    assert want.series.shape == (len(PROBE.dois), currently.windows)
    assert want.sum_score[busy] == sum(p.score for p in PROBE.events if p.doi == f"{PREFIX}busy")


def test_every_probe_event_survives_the_bridges_decoding() -> None:
    for point in PROBE.events:
        assert decode_event(upstream_event(point)) == point


def test_the_influx_probe_stays_inside_the_scratch_buckets_retention() -> None:
    probe = build_probe(DEFAULT_DURATIONS, INFLUX_NOW, max_age_s=PROBE_MAX_AGE_S)
    assert all(INFLUX_NOW - p.time_ns <= PROBE_MAX_AGE_S * S for p in probe.events)
    # The span starts of month and year are older than the retention; everything else is probed.
    assert {item.split(":")[0] for item in probe.left_out} == {"month", "year"}
    assert not any("window edge" in item for item in probe.left_out)
    assert {p.doi for p in probe.events} == set(PROBE.dois)
    for duration in DEFAULT_DURATIONS:
        assert probe.qualifying(duration) == [f"{PREFIX}busy", f"{PREFIX}steady"]
    # InfluxDB keeps one point per DOI and stored time: every probe event stays its own point.
    assert len({(p.doi, event_timestamp_ns(p)) for p in probe.events}) == len(probe.events)


def test_custom_durations_shape_the_probe() -> None:
    durations = list(build_durations('{"currently": {"min_events": 3}, "year": {"min_events": 50}}').values())
    probe = build_probe(durations, POSTGRES_NOW_NS)
    for duration in durations:
        assert probe.in_span(duration)[f"{PREFIX}steady"] == 51
    assert probe.in_span(durations[0])[f"{PREFIX}quiet"] == 3
    assert f"{PREFIX}quiet" not in probe.qualifying(durations[0])


def test_edge_offsets_are_distinct() -> None:
    for duration in DEFAULT_DURATIONS:
        offsets = [(back, micros) for back, micros, _ in edge_offsets(duration)]
        assert len(offsets) == len(set(offsets))


def test_the_run_time_must_be_a_whole_second() -> None:
    with pytest.raises(ValueError, match="whole second"):
        build_probe(DEFAULT_DURATIONS, POSTGRES_NOW_NS + 1)
    assert isinstance(PROBE, Probe)
