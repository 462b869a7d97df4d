"""What the trend math needs of a chunk's events, and what a trend run publishes per DOI:
pure types shared by the stores, the trend math and the run state, kept below all three so
the math imports no store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Aggregates:
    """Per-DOI sums and the window series: everything the trend math needs of the events.

    Sums rather than means, so a store can compute them with ``GROUP BY`` in its database
    and ship ``n_dois × (11 + windows)`` numbers instead of every event. ``count`` is a
    float64 like the rest. ``series`` has shape ``(n_dois, windows)``, oldest window
    first, zero-filled. Row ``i`` of every array belongs to the ``i``-th DOI the caller
    asked for.
    """

    count: FloatArray
    sum_score: FloatArray
    decayed_score: FloatArray
    sum_age: FloatArray
    sum_sentiment: FloatArray
    sum_followers: FloatArray
    sum_abstract: FloatArray
    sum_length: FloatArray
    sum_questions: FloatArray
    sum_exclamations: FloatArray
    sum_bot_rating: FloatArray
    series: FloatArray


@dataclass(frozen=True, slots=True)
class TrendColumns:
    """The trend columns of many DOIs (SPEC §4), one array of length ``n_dois`` each, all
    float64 but ``mk_trend`` (strings). The field order is that of a trend row."""

    score: FloatArray
    count: FloatArray
    mean_sentiment: FloatArray
    sum_followers: FloatArray
    abstract_difference: FloatArray
    mean_age: FloatArray
    mean_length: FloatArray
    mean_questions: FloatArray
    mean_exclamations: FloatArray
    mean_bot_rating: FloatArray
    mean_score: FloatArray
    stddev: FloatArray
    ema: FloatArray
    kama: FloatArray
    ker: FloatArray
    projected_change: FloatArray
    trending: FloatArray
    mk_trend: NDArray[np.str_]
    mk_p: FloatArray

    def __len__(self) -> int:
        return len(self.score)


#: Column order of a trend row (the PostgreSQL tables', InfluxDB's trend fields').
TREND_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(TrendColumns))

#: One published trend row: ``doi`` and the columns of :data:`TREND_COLUMNS`.
TrendRow = Mapping[str, object]
