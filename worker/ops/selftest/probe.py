"""The self-test's probe: fixed events under :data:`PREFIX` and what a store must answer (pure).

``busy`` qualifies everywhere (two events in one second, one written twice), ``steady`` just
qualifies, ``quiet`` just does not, and ``edges-<duration>`` sits on every window edge and
span end (:mod:`worker.core.alignment`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import Duration
from worker.core.events import Point
from worker.core.reference import reference_aggregates

NS = alignment.NS_PER_S
_US = 1_000

#: The probe's DOIs: the DOI directory ``10.0000`` is not assigned to any registrant.
PREFIX = "10.0000/aggregator-selftest/"

#: The run time of the PostgreSQL probe, 2000-07-31T12:00:00Z: long before any retention, so
#: the trend queries over its spans see only the probe (it shares ``discussion_event``).
POSTGRES_NOW_NS = 965_044_800 * NS


@dataclass(frozen=True, slots=True)
class Probe:
    """The probe events and the answers they call for."""

    now_ns: int
    #: Every probe event once: what the store must hold after the writes.
    events: tuple[Point, ...]
    #: What is written, in order; the second batch starts with :attr:`redelivered` again.
    batches: tuple[tuple[Point, ...], ...]
    redelivered: Point
    #: Edges not probed because they are older than ``max_age_s``.
    left_out: tuple[str, ...]
    prefix: str = PREFIX

    @property
    def dois(self) -> list[str]:
        """Every probe DOI, sorted (the trend engine's order)."""
        return sorted({p.doi for p in self.events})

    @property
    def written(self) -> int:
        """Events written, the redelivery included."""
        return sum(len(batch) for batch in self.batches)

    def time_range_ns(self) -> tuple[int, int]:
        """``[start, stop)`` on the stored time holding every probe event (whole seconds:
        InfluxDB moves an event within its second)."""
        times = [alignment.whole_second_ns(p.time_ns) for p in self.events]
        return min(times), max(times) + NS

    def counts(self) -> dict[str, int]:
        """Events per DOI, the redelivered one once."""
        return dict(Counter(p.doi for p in self.events))

    def in_span(self, duration: Duration) -> dict[str, int]:
        """Events per DOI in the duration's span at ``now`` (every probe DOI, 0 included)."""
        found = Counter(p.doi for p in self.events if alignment.in_span(duration, self.now_ns, p.time_ns))
        return {doi: found[doi] for doi in self.dois}

    def qualifying(self, duration: Duration) -> list[str]:
        """The probe DOIs ``qualifying_dois(duration, now)`` must return: more than ``min_events``."""
        return [doi for doi, n in self.in_span(duration).items() if n > duration.min_events]

    def reference(self, duration: Duration) -> Aggregates:
        """What ``trend_inputs(duration, now, dois)`` must return for :attr:`dois`."""
        return reference_aggregates(self.events, self.dois, self.now_ns, duration)


def _point(event_id: str, doi: str, time_ns: int, i: int, score: float) -> Point:
    """A probe event. Every value is a multiple of 1/4 (exact in binary), so a sum is the same
    in any order: a store that adds in another order must still match to the last bit."""
    return Point(
        event_id=event_id, doi=doi, time_ns=time_ns, score=score,
        sentiment_raw=((i % 5) - 2) * 0.25, followers=100 * (i % 7 + 1), length=40 + 3 * (i % 11),
        questions=i % 2, exclamations=i % 3, bot_rating=(i % 4) * 0.5, contains_abstract_raw=(i % 3) * 0.25,
        time_score=1.5, type_factor=1.0, user_score=2.25, content_score=0.75,
    )


def _busy(doi: str, now_ns: int, reach_s: int, n: int) -> list[Point]:
    step = max(1, (reach_s - 2) // n)
    points = [_point(f"selftest:busy:{i}", doi, now_ns - (1 + i * step) * NS + (i % 4) * 250_000 * _US, i,
                     0.5 * (n - i) + (i % 3) * 0.25)
              for i in range(n)]
    second = now_ns - 90 * NS
    return [*points, _point("selftest:busy:same-second-1", doi, second + 250_000 * _US, 1, 3.0),
            _point("selftest:busy:same-second-2", doi, second + 750_000 * _US, 2, 4.5)]


def _spread(name: str, doi: str, now_ns: int, reach_s: int, n: int) -> list[Point]:
    """``n`` events from a second to ``reach_s`` back, scores alternating 1.0 and 1.5."""
    step = max(1, (reach_s - 2) // max(n, 1))
    return [_point(f"selftest:{name}:{i}", doi, now_ns - (1 + i * step) * NS, i, 1.0 + (i % 2) * 0.5)
            for i in range(n)]


def edge_offsets(duration: Duration) -> list[tuple[int, int, str]]:
    """``(seconds back from now, sub-second µs, what)`` of the duration's edge events."""
    w, windows, span = duration.window_s, duration.windows, duration.span_s
    last = 999_999  # the last microsecond of a second (PostgreSQL keeps microseconds)
    found = [
        (0, 0, "now"),
        (0, 500_000, "half a second after now (its second: in)"),
        (-1, 0, "the second after now (out)"),
        (w - 1, 0, "window 0's oldest second"),
        (w, 0, "the first window edge (window 1)"),
        (w, last, "the first window edge, its last microsecond"),
        ((windows - 1) * w, 0, "the oldest window's newest second"),
        (windows * w - 1, last, "the oldest window's oldest second"),
        (span, 0, "the span's start (in)"),
        (span, last, "the span's start, its last microsecond (in)"),
        (span + 1, last, "the second before the span (out)"),
        (windows * w, 0, "one window past the series"),  # the span's start for every default duration
    ]
    return [edge for i, edge in enumerate(found) if edge[:2] not in {seen[:2] for seen in found[:i]}]  # first wins


def build_probe(durations: Sequence[Duration], now_ns: int, *, max_age_s: int | None = None,
                prefix: str = PREFIX) -> Probe:
    """The probe for these durations at ``now_ns`` (a whole second).

    ``max_age_s`` leaves out every event older than that many seconds (InfluxDB's scratch
    bucket refuses points older than its retention).
    """
    alignment.check_now(now_ns)
    if not durations:
        raise ValueError("the probe needs at least one duration")
    reach = min(d.span_s for d in durations)
    if max_age_s is not None:
        reach = min(reach, max_age_s - 1)
    busy = _busy(f"{prefix}busy", now_ns, reach, max(d.min_events for d in durations) + 2)
    steady = _spread("steady", f"{prefix}steady", now_ns, reach, max(d.min_events for d in durations) + 1)
    quiet = _spread("quiet", f"{prefix}quiet", now_ns, reach, min(d.min_events for d in durations))
    edges: list[Point] = []
    left_out: list[str] = []
    for duration in durations:
        for i, (back, micros, what) in enumerate(edge_offsets(duration)):
            if max_age_s is not None and back + 1 > max_age_s:
                left_out.append(f"{duration.name}: {what}")
                continue
            edges.append(_point(f"selftest:edges-{duration.name}:{back}.{micros:06d}", f"{prefix}edges-{duration.name}",
                                now_ns - back * NS + micros * _US, i, 1.0 + (i % 8) * 0.5))
    events = (*busy, *steady, *quiet, *edges)
    if len({p.event_id for p in events}) != len(events):
        raise ValueError("probe event ids must be unique")  # e.g. two durations of one name
    middle = len(events) // 2
    redelivered = events[0]
    batches = (events[:middle], (redelivered, *events[middle:]))
    return Probe(now_ns, events, batches, redelivered, tuple(left_out), prefix)


def upstream_event(point: Point) -> bytes:
    """The Kafka message (a processed discussion event, SPEC §2) the bridge would decode into
    ``point``: the probe enters through the same decoding as every event."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=point.time_ns // _US)
    if point.time_ns % _US:
        raise ValueError("probe times are whole microseconds (what the upstream timestamps carry)")
    return json.dumps({
        "id": point.event_id,
        "timestamp": at.isoformat(),
        "obj": {"data": {"doi": point.doi}},
        "subj": {"pid": "aggregator-selftest", "processed": {
            "score": point.score, "sentiment_raw": point.sentiment_raw, "followers": point.followers,
            "length": point.length, "question_mark_count": point.questions,
            "exclamation_mark_count": point.exclamations, "bot_rating": point.bot_rating,
            "contains_abstract_raw": point.contains_abstract_raw, "time_score": point.time_score,
            "type_factor": point.type_factor, "user_score": point.user_score,
            "content_score": point.content_score}},
    }).encode()
