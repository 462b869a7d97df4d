"""The trend inputs a store must return, computed from the events one by one (pure).

Straight from :mod:`worker.core.alignment`'s definitions, sharing no code with the stores'
queries: the reference for them in the store contract tests and ``aggregator selftest``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import Duration
from worker.core.events import Point

#: Each per-DOI sum of :class:`Aggregates` (``count`` aside) and the event field it adds up.
SUMMED_FIELDS: dict[str, str] = {
    "sum_score": "score",
    "sum_sentiment": "sentiment_raw",
    "sum_followers": "followers",
    "sum_abstract": "contains_abstract_raw",
    "sum_length": "length",
    "sum_questions": "questions",
    "sum_exclamations": "exclamations",
    "sum_bot_rating": "bot_rating",
}


def decay_weight(age_s: int, gravity: float) -> float:
    """``exp(gravity · age)``, 1 at age 0 (also for an infinite gravity), never above 1."""
    if age_s <= 0:
        return 1.0
    return math.exp(min(gravity * age_s, 0.0))  # an overflow to -inf is a weight of 0


def reference_aggregates(points: Iterable[Point], dois: Sequence[str], now_ns: int,
                         duration: Duration) -> Aggregates:
    """What ``store.trend_inputs(duration, now_ns, dois)`` must return when the store holds
    ``points`` (each stored event once: pass a redelivered event once).

    Row ``i`` belongs to ``dois[i]``; events of other DOIs are ignored, and a DOI without
    events in the span gets zeros. ``now_ns`` must be a whole second.
    """
    alignment.check_now(now_ns)
    index = {doi: i for i, doi in enumerate(dois)}
    if len(index) != len(dois):
        raise ValueError("reference_aggregates: duplicate DOIs")
    n, windows = len(dois), duration.windows
    sums = {name: np.zeros(n) for name in ("count", "decayed_score", "sum_age", *SUMMED_FIELDS)}
    series = np.zeros((n, windows))
    for point in points:
        row = index.get(point.doi)
        if row is None or not alignment.in_span(duration, now_ns, point.time_ns):
            continue
        age = alignment.age_s(now_ns, point.time_ns)
        score = float(point.score)
        sums["count"][row] += 1.0
        sums["decayed_score"][row] += score * decay_weight(age, duration.gravity)
        sums["sum_age"][row] += float(age)
        for name, field in SUMMED_FIELDS.items():
            sums[name][row] += float(getattr(point, field))
        back = alignment.window_back(duration, now_ns, point.time_ns)
        if back is not None:
            series[row, windows - 1 - back] += score
    return Aggregates(series=series, **sums)
