"""One sample event as a ``Point`` (the stores' encodings), and the aggregates a store must
return for a set of points (the reference its trend inputs are compared with, in product
code since ``aggregator selftest`` uses it too: :mod:`worker.core.reference`)."""

from __future__ import annotations

from typing import Any

from worker.core.events import POINT_FIELDS, Point
from worker.core.reference import reference_aggregates

__all__ = ["SECOND", "make_point", "measured", "reference_aggregates"]

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


def measured(point: Point) -> tuple[float | int, ...]:
    """The measured values of a point (all but its identity and time), to compare a read-back."""
    return tuple(getattr(point, name) for name in POINT_FIELDS)
