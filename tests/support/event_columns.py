"""Raw events as columns, aggregated in numpy: what the stores do in their databases.

The product aggregates in PostgreSQL or InfluxDB; this second implementation feeds the
trend-math tests and ``bench/trend_math.py`` with :class:`Aggregates` from raw events, and
cross-checks the event-by-event reference (:mod:`worker.core.reference`) and the stores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from worker.core import alignment
from worker.core.aggregates import Aggregates
from worker.core.durations import Duration
from worker.core.events import Point

FloatArray = NDArray[np.float64]

#: The stored event fields that are summed per DOI (SPEC §2).
EVENT_FIELDS = ("score", "sentiment_raw", "followers", "length", "questions", "exclamations", "bot_rating",
                "contains_abstract_raw")


@dataclass(frozen=True, slots=True)
class EventColumns:
    """One array element per event: ``doi_index`` (``0 .. n_dois − 1``), ``age_s`` (``now − t``
    in seconds) and the stored event fields as float64."""

    doi_index: NDArray[np.int64]
    age_s: FloatArray
    score: FloatArray
    sentiment_raw: FloatArray
    followers: FloatArray
    length: FloatArray
    questions: FloatArray
    exclamations: FloatArray
    bot_rating: FloatArray
    contains_abstract_raw: FloatArray


def aggregate_events(cols: EventColumns, n_dois: int, duration: Duration) -> Aggregates:
    """Per-DOI sums and window series in a handful of ``bincount``s; only events with
    ``0 <= age_s <= span_s`` (the SPEC's ``[now − span, now]``) take part."""
    take = (cols.age_s >= 0.0) & (cols.age_s <= float(duration.span_s))
    doi_index = cols.doi_index[take]
    age, score = cols.age_s[take], cols.score[take]

    def total(weights: FloatArray) -> FloatArray:
        return np.bincount(doi_index, weights=weights, minlength=n_dois).astype(np.float64)

    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # Age 0 weighs 1 explicitly: for an infinite gravity ``gravity · 0`` is NaN.
        decay = np.exp(np.minimum(np.where(age > 0.0, duration.gravity * age, 0.0), 0.0))
    return Aggregates(
        count=np.bincount(doi_index, minlength=n_dois).astype(np.float64),
        sum_score=total(score),
        decayed_score=total(score * decay),
        sum_age=total(age),
        sum_sentiment=total(cols.sentiment_raw[take]),
        sum_followers=total(cols.followers[take]),
        sum_abstract=total(cols.contains_abstract_raw[take]),
        sum_length=total(cols.length[take]),
        sum_questions=total(cols.questions[take]),
        sum_exclamations=total(cols.exclamations[take]),
        sum_bot_rating=total(cols.bot_rating[take]),
        series=window_series(doi_index, age, score, n_dois, duration),
    )


def window_series(doi_index: NDArray[np.int64], age_s: FloatArray, score: FloatArray, n_dois: int,
                  duration: Duration) -> FloatArray:
    """Sum of ``score`` per DOI and window, shape ``(n_dois, windows)``, oldest window first.

    Column ``j`` holds the ages in ``[(windows−1−j)·w, (windows−j)·w)``. ``floor(age / w)``
    can round an age just below a boundary up; it is corrected against exact multiples of
    ``w``, so a boundary age always lands in the later-aged window.
    """
    windows, width = duration.windows, float(duration.window_s)
    k = np.floor(age_s / width)
    k = np.where(k * width > age_s, k - 1.0, k)
    k = np.where((k + 1.0) * width <= age_s, k + 1.0, k)
    inside = (k >= 0.0) & (k < windows)
    flat = doi_index[inside] * windows + (windows - 1) - k[inside].astype(np.int64)
    series = np.bincount(flat, weights=score[inside], minlength=n_dois * windows)
    return series.astype(np.float64).reshape(n_dois, windows)


def aggregate_points(points: Sequence[Point], dois: Sequence[str], now_ns: int, duration: Duration) -> Aggregates:
    """:func:`aggregate_events` of stored points at their whole-second ages; points of
    other DOIs are ignored."""
    index = {doi: i for i, doi in enumerate(dois)}
    mine = [p for p in points if p.doi in index]
    return aggregate_events(EventColumns(
        doi_index=np.array([index[p.doi] for p in mine], dtype=np.int64),
        age_s=np.array([float(alignment.age_s(now_ns, p.time_ns)) for p in mine]),
        **{name: np.array([float(getattr(p, name)) for p in mine]) for name in EVENT_FIELDS},
    ), len(dois), duration)
