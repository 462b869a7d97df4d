"""One sample event as a ``Point`` (the stores' encodings), and the aggregates a store must
return for a set of points (the reference its trend inputs are compared with)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import Duration
from worker.core.events import Point
from worker.trends.math import EventColumns, aggregate_events

#: A whole second (2021-05-04T12:34:56Z) in nanoseconds.
SECOND = 1_620_131_696 * 10**9


def make_point(
    event_id: str = "ev-1", doi: str = "10.1101/2021.04.01.123456", time_ns: int = SECOND, **kw: Any
) -> Point:
    """SPEC §2's example event; keyword arguments replace any measured value."""
    values: dict[str, Any] = {
        "score": 42.5,
        "sentiment_raw": 0.3,
        "followers": 1200,
        "length": 180,
        "questions": 1,
        "exclamations": 0,
        "bot_rating": 10.0,
        "contains_abstract_raw": 0.2,
        "time_score": 20.0,
        "type_factor": 1.0,
        "user_score": 25.1,
        "content_score": 14.0,
    }
    values.update(kw)
    return Point(event_id=event_id, doi=doi, time_ns=time_ns, **values)


def reference_aggregates(points: Sequence[Point], dois: list[str], now_ns: int, duration: Duration) -> Aggregates:
    """What ``trend_inputs(duration, now_ns, dois)`` must return, computed from the events
    in Python by the trend math's own aggregation (``worker.trends.math.aggregate_events``)."""
    index = {d: i for i, d in enumerate(dois)}
    cols = EventColumns(
        doi_index=np.array([index[p.doi] for p in points], dtype=np.int64),
        age_s=np.array([float(alignment.age_s(now_ns, p.time_ns)) for p in points]),
        **{name: np.array([float(getattr(p, name)) for p in points]) for name in (
            "score", "sentiment_raw", "followers", "length", "questions", "exclamations", "bot_rating",
            "contains_abstract_raw")},
    )
    return aggregate_events(cols, len(dois), duration)
