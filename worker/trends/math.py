"""Trend math for many DOIs at once (SPEC §4): pure numpy, no I/O.

A trend run scores thousands of DOIs; doing that one DOI at a time in Python (pandas per
DOI, ``pymannkendall`` per series, ``statsmodels`` Holt per series) manages a few dozen
rows per second (the Holt fit alone takes ~25 ms; see ``bench/trend_math.py``). Here
every quantity is computed for all DOIs of a chunk in one array operation. The only
Python loops run over the *time* axis (at most ``windows`` steps), over fixed-size chunks
of DOIs (to bound memory) and over the terms of a series, never over DOIs one by one.

Two stages, so a store may do the first in its database:

1. :func:`aggregate_events` turns raw events (:class:`EventColumns`) into per-DOI sums and
   the window series (:class:`~worker.store.base.Aggregates`, the type of the store port:
   the stores compute the same thing in their databases).
2. :func:`compute_trends` turns :class:`Aggregates` into the trend columns
   (:class:`TrendColumns`); :func:`rows` makes one dict per DOI for the PostgreSQL layer.

Definitions and the parameters SPEC §4 leaves open
---------------------------------------------------
Events
    Only events with ``0 <= age_s <= span_s`` take part (the SPEC's ``[now − span, now]``,
    both ends inclusive); others are ignored, so a store may hand over a superset.
score
    ``Σ score_i · exp(gravity · age_i)``. ``gravity · age`` is ``<= 0`` for every event that
    takes part, so every weight is in ``[0, 1]``: no overflow is possible; an exponent
    below about -745 underflows to a weight of 0 (a negligible event), an overflowing
    product becomes ``-inf`` and a weight of 0, and age 0 always has weight 1 (even for an
    infinite gravity, where ``gravity · 0`` would be NaN).
Window series
    ``series[:, j]`` (``j = 0 .. windows-1``) is the sum of ``score`` over events with age
    in ``[(windows-1-j)·w, (windows-j)·w)``: the last window ends at ``now`` and holds age 0;
    ages ``>= windows·w`` are outside the series but still count for the aggregates.
    Windows without events are 0. Window membership is decided exactly (the floor of
    ``age / w`` is corrected by comparing with exact integer multiples of ``w``), so an
    event on a boundary always lands in the later-aged window.
stddev
    Sample standard deviation (``ddof=1``) of the series, as InfluxDB's ``stddev()``.
ema
    Exponential moving average with period ``EMA_PERIOD = 10`` windows,
    ``alpha = 2 / (10 + 1)``, seeded with the first (oldest) window:
    ``ema_0 = x_0``, ``ema_t = alpha·x_t + (1 − alpha)·ema_{t−1}``; the last value is
    reported (pandas ``ewm(span=10, adjust=False)``). Ten windows is a "recent" average
    (an hour for ``currently``); the source's Flux call used ``n = 60`` over 60 windows,
    which degenerates to the plain mean of the series, already available as a trend.
kama, ker
    Kaufman's adaptive moving average with the standard parameters: efficiency-ratio
    period ``p = KAMA_ER_PERIOD = 10`` (``min(10, windows − 1)`` for shorter series),
    fast period 2, slow period 30. ``ER_t = |x_t − x_{t−p}| / Σ_{k=t−p+1..t} |x_k −
    x_{k−1}|``, ``sc_t = (ER_t·(2/3 − 2/31) + 2/31)²``, seeded ``kama_{p−1} = x_{p−1}``,
    ``kama_t = kama_{t−1} + sc_t·(x_t − kama_{t−1})`` for ``t = p .. windows−1``
    (TA-Lib's convention). ``kama`` is the last value, ``ker`` the last ER. When the
    volatility (the denominator) is 0 the last ``p`` windows are constant: ER is 0 (no
    directional movement, slowest smoothing) — a DOI without events lately must not look
    like a perfectly efficient trend (TA-Lib would say 1).
projected_change
    Holt's linear trend method (Holt–Winters without seasonality) forecast one window
    ahead: the predicted series value for the next window (what the source stored from
    Flux ``holtWinters(n: 1, seasonality: 0)``; it is not clipped at 0). Initialisation:
    ``level_1 = x_1``, ``trend_1 = x_1 − x_0`` (equivalent to ``level_0 = x_0``,
    ``trend_0 = x_1 − x_0``); error-correction recursion for ``t = 2 .. windows−1``::

        f = level + trend;  e = x_t − f;  SSE += e²
        level = f + alpha·e;  trend = trend + alpha·beta·e

    (the same as the textbook component form). ``alpha`` and ``beta`` come from a fixed
    grid, ``HOLT_ALPHAS = 0.05, 0.10, …, 1.00`` × ``HOLT_BETAS = 0.0, 0.1, …, 1.0``
    (220 pairs), choosing the pair with the smallest SSE of the one-step-ahead errors;
    ties go to the smallest alpha, then the smallest beta (row-major ``argmin``). The
    forecast is ``level + trend`` after the last window. A grid instead of an optimizer
    keeps the fit vectorized (all DOIs × all pairs in one array) and deterministic.
    With 2 windows the forecast is ``2·x_1 − x_0``; with 1 window it is ``x_0``.
trending
    Theil–Sen slope: median of ``(x_j − x_i) / (j − i)`` over all ``i < j``, computed
    with the same floating-point operations as ``pymannkendall.sens_slope`` so the values
    agree exactly. 0 for a single window (pymannkendall would return NaN).
mk_trend, mk_p
    Mann–Kendall test as ``pymannkendall.original_test(series, alpha=0.05)``:
    ``S = Σ_{i<j} sign(x_j − x_i)``; ``var_S = (n(n−1)(2n+5) − Σ_ties t(t−1)(2t+5)) / 18``;
    ``z = (S − 1)/√var_S`` for ``S > 0``, ``(S + 1)/√var_S`` for ``S < 0``, 0 for ``S = 0``;
    ``p = 2·(1 − Φ(|z|))`` (evaluated like scipy's ``ndtr`` but in numpy: it agrees with
    pymannkendall to ~1e-15 absolute and is 0.0 wherever pymannkendall's is);
    ``'increasing'``/``'decreasing'`` when ``|z| > Φ⁻¹(0.975)`` and the sign of ``z``
    says so, else ``'no trend'``.
    A constant series (e.g. all zeros) has ``S = var_S = 0``: ``z = 0``, ``p = 1``,
    ``'no trend'``.

Degenerate cases (no NaN or infinity ever leaves this module)
    * A DOI without events: ``count = 0``, every mean and sum 0, ``score = 0``, an
      all-zero series.
    * An all-zero (or constant ``c``) series: ``stddev = 0``, ``kama = c``, ``ema = c``
      (to rounding), ``ker = 0``, ``projected_change = c``, ``trending = 0``,
      ``'no trend'``, ``p = 1``.
    * A single window: ``stddev = 0``, ``ker = 0``, ``kama = ema = projected_change = x_0``,
      ``trending = 0``, ``'no trend'``, ``p = 1``.
    * Non-finite inputs are rejected with :class:`ValueError` (a NaN would silently poison
      every column). Only sums of finite values beyond ±1.8e308 could still overflow; as a
      last resort the outputs are clamped to the largest finite float (NaN to 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.core.aggregates import Aggregates
from worker.core.durations import Duration

FloatArray = NDArray[np.float64]

#: Column order of a trend row; the PostgreSQL layer uses it for its column lists.
TREND_COLUMNS: tuple[str, ...] = (
    "score",
    "count",
    "mean_sentiment",
    "sum_followers",
    "abstract_difference",
    "mean_age",
    "mean_length",
    "mean_questions",
    "mean_exclamations",
    "mean_bot_rating",
    "mean_score",
    "stddev",
    "ema",
    "kama",
    "ker",
    "projected_change",
    "trending",
    "mk_trend",
    "mk_p",
)

EMA_PERIOD = 10
EMA_ALPHA = 2.0 / (EMA_PERIOD + 1)

KAMA_ER_PERIOD = 10
KAMA_FAST = 2
KAMA_SLOW = 30
_KAMA_FAST_SC = 2.0 / (KAMA_FAST + 1)
_KAMA_SLOW_SC = 2.0 / (KAMA_SLOW + 1)

# i / 20 and i / 10 are the doubles nearest to 0.05·i and 0.1·i (one correctly rounded
# division), i.e. exactly what the decimal literals would give.
HOLT_ALPHAS: tuple[float, ...] = tuple(i / 20 for i in range(1, 21))
HOLT_BETAS: tuple[float, ...] = tuple(i / 10 for i in range(0, 11))

MK_ALPHA = 0.05
#: ``scipy.stats.norm.ppf(1 - MK_ALPHA / 2)``, the bound pymannkendall compares ``|z|`` with.
MK_Z_CRITICAL = 1.959963984540054

# DOIs per block in the pairwise (Theil–Sen, Mann–Kendall) and Holt stages. Blocks bound
# the memory of the (DOIs × 1770 pairs) and (DOIs × 220 grid points) arrays and keep
# them in cache; 128 was fastest on a 2-core machine and costs nothing in correctness.
CHUNK_DOIS = 128

_MAX = float(np.finfo(np.float64).max)


@dataclass(frozen=True, slots=True)
class EventColumns:
    """Raw events of many DOIs, one array element per event (columnar, as stores read them).

    ``doi_index`` maps each event to its DOI's position (``0 .. n_dois − 1``) in the list
    the caller keeps; ``age_s`` is ``now − t_i`` in seconds. All other columns are the
    stored event fields (SPEC §2) as float64.
    """

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


@dataclass(frozen=True, slots=True)
class TrendColumns:
    """The trend columns of many DOIs (SPEC §4), one array of length ``n_dois`` each.

    Field order is :data:`TREND_COLUMNS`. All float64 except ``mk_trend`` (strings).
    """

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


if tuple(f.name for f in fields(TrendColumns)) != TREND_COLUMNS:  # pragma: no cover
    raise AssertionError("TrendColumns fields and TREND_COLUMNS have drifted apart")


# --------------------------------------------------------------------------- stage 1


def aggregate_events(cols: EventColumns, n_dois: int, duration: Duration) -> Aggregates:
    """Per-DOI sums and window series of raw events, all DOIs in a handful of ``bincount``s.

    Events outside ``[0, span_s]`` of age are ignored (see the module docstring).
    Raises :class:`ValueError` for mismatched column lengths, DOI indices outside
    ``0 .. n_dois − 1`` or non-finite values, because any of them would corrupt other
    DOIs' rows silently.
    """
    doi_index, values = _validated_events(cols, n_dois)
    age = values["age_s"]
    take = (age >= 0.0) & (age <= float(duration.span_s))
    if not take.all():
        doi_index = doi_index[take]
        values = {name: column[take] for name, column in values.items()}
        age = values["age_s"]

    def total(weights: FloatArray) -> FloatArray:
        return np.bincount(doi_index, weights=weights, minlength=n_dois).astype(np.float64)

    score = values["score"]
    return Aggregates(
        count=np.bincount(doi_index, minlength=n_dois).astype(np.float64),
        sum_score=total(score),
        decayed_score=total(score * decay_weights(age, duration.gravity)),
        sum_age=total(age),
        sum_sentiment=total(values["sentiment_raw"]),
        sum_followers=total(values["followers"]),
        sum_abstract=total(values["contains_abstract_raw"]),
        sum_length=total(values["length"]),
        sum_questions=total(values["questions"]),
        sum_exclamations=total(values["exclamations"]),
        sum_bot_rating=total(values["bot_rating"]),
        series=window_series(doi_index, age, score, n_dois, duration),
    )


def decay_weights(age_s: FloatArray, gravity: float) -> FloatArray:
    """``exp(gravity · age)`` for ``age >= 0``, guarded so it is always a number in [0, 1].

    Age 0 is weighted 1 explicitly: for an infinite gravity ``gravity · 0`` is NaN. An
    overflowing product (``-inf``) and deep underflow both give a weight of 0.
    """
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        exponent = np.where(age_s > 0.0, gravity * age_s, 0.0)
        return np.exp(np.minimum(exponent, 0.0))


def window_series(
    doi_index: NDArray[np.int64],
    age_s: FloatArray,
    score: FloatArray,
    n_dois: int,
    duration: Duration,
) -> FloatArray:
    """Sum of ``score`` per DOI and window, shape ``(n_dois, windows)``, oldest window first.

    ``floor(age / w)`` alone can round an age just below a boundary up into the next
    window; it is corrected against exact multiples of ``w`` (integers below 2**53, so
    ``k·w`` is exact), which makes the assignment exact for every float age.
    """
    windows = duration.windows
    width = float(duration.window_s)
    k = np.floor(age_s / width)
    k = np.where(k * width > age_s, k - 1.0, k)
    k = np.where((k + 1.0) * width <= age_s, k + 1.0, k)
    inside = (k >= 0.0) & (k < windows)
    column = (windows - 1) - k[inside].astype(np.int64)
    flat = doi_index[inside] * windows + column
    series = np.bincount(flat, weights=score[inside], minlength=n_dois * windows)
    return series.astype(np.float64).reshape(n_dois, windows)


def _validated_events(cols: EventColumns, n_dois: int) -> tuple[NDArray[np.int64], dict[str, FloatArray]]:
    if n_dois < 0:
        raise ValueError(f"n_dois must be >= 0, got {n_dois}")
    doi_index = np.asarray(cols.doi_index)
    if doi_index.ndim != 1:
        raise ValueError("doi_index must be one-dimensional")
    if doi_index.size and not np.issubdtype(doi_index.dtype, np.integer):
        raise ValueError(f"doi_index must be integers, got {doi_index.dtype}")
    doi_index = doi_index.astype(np.int64, copy=False)
    n_events = doi_index.size
    if n_events and (doi_index.min() < 0 or doi_index.max() >= n_dois):
        raise ValueError(f"doi_index must lie in 0..{n_dois - 1}")
    values: dict[str, FloatArray] = {}
    for field in fields(EventColumns):
        if field.name == "doi_index":
            continue
        column = np.asarray(getattr(cols, field.name), dtype=np.float64)
        if column.shape != (n_events,):
            raise ValueError(f"column {field.name!r} has shape {column.shape}, expected ({n_events},)")
        if not np.isfinite(column).all():
            raise ValueError(f"column {field.name!r} contains NaN or infinity")
        values[field.name] = column
    return doi_index, values


# --------------------------------------------------------------------------- stage 2


def compute_trends(agg: Aggregates, duration: Duration) -> TrendColumns:
    """All trend columns of all DOIs in ``agg`` (definitions in the module docstring)."""
    sums, series = _validated_aggregates(agg, duration)
    n = series.shape[0]
    count = sums["count"]
    has_events = count > 0
    safe_count = np.where(has_events, count, 1.0)

    def mean(total: FloatArray) -> FloatArray:
        return np.where(has_events, total / safe_count, 0.0)

    stddev = np.empty(n)
    ema = np.empty(n)
    kama = np.empty(n)
    ker = np.empty(n)
    holt = np.empty(n)
    slope = np.empty(n)
    mk_s = np.empty(n)
    mk_var = np.empty(n)
    with np.errstate(over="ignore", under="ignore"):
        for start in range(0, n, CHUNK_DOIS):
            block = slice(start, min(start + CHUNK_DOIS, n))
            x = series[block]
            stddev[block] = sample_stddev(x)
            ema[block] = ema_last(x)
            kama[block], ker[block] = kama_last(x)
            holt[block] = holt_forecast(x)
            slope[block], mk_s[block], mk_var[block] = pairwise_statistics(x)
        mk_z = mann_kendall_z(mk_s, mk_var)
        mk_p = two_sided_p(mk_z)
    significant = np.abs(mk_z) > MK_Z_CRITICAL
    mk_trend = np.where(
        significant & (mk_z > 0),
        "increasing",
        np.where(significant & (mk_z < 0), "decreasing", "no trend"),
    ).astype("<U10")

    return TrendColumns(
        score=_finite(sums["decayed_score"]),
        count=_finite(count),
        mean_sentiment=_finite(mean(sums["sum_sentiment"])),
        sum_followers=_finite(sums["sum_followers"]),
        abstract_difference=_finite(mean(sums["sum_abstract"])),
        mean_age=_finite(mean(sums["sum_age"])),
        mean_length=_finite(mean(sums["sum_length"])),
        mean_questions=_finite(mean(sums["sum_questions"])),
        mean_exclamations=_finite(mean(sums["sum_exclamations"])),
        mean_bot_rating=_finite(mean(sums["sum_bot_rating"])),
        mean_score=_finite(mean(sums["sum_score"])),
        stddev=_finite(stddev),
        ema=_finite(ema),
        kama=_finite(kama),
        ker=_finite(ker),
        projected_change=_finite(holt),
        trending=_finite(slope),
        mk_trend=mk_trend,
        mk_p=_finite(mk_p),
    )


def rows(dois: Sequence[str], cols: TrendColumns) -> list[dict[str, Any]]:
    """One dict per DOI: ``{"doi": ..., <TREND_COLUMNS>...}`` with plain Python values.

    Plain ``float``/``int``/``str`` (via ``tolist``), because the rows travel as JSON
    through a Celery chord and into psycopg2, neither of which takes numpy scalars.
    ``count`` becomes an ``int``: it is a number of events.
    """
    if len(dois) != len(cols):
        raise ValueError(f"{len(dois)} DOIs for {len(cols)} trend rows")
    lists: dict[str, list[Any]] = {name: getattr(cols, name).tolist() for name in TREND_COLUMNS}
    lists["count"] = [round(c) for c in lists["count"]]
    columns = [lists[name] for name in TREND_COLUMNS]
    return [
        {"doi": doi, **dict(zip(TREND_COLUMNS, values, strict=True))}
        for doi, *values in zip(dois, *columns, strict=True)
    ]


def _validated_aggregates(agg: Aggregates, duration: Duration) -> tuple[dict[str, FloatArray], FloatArray]:
    series = np.asarray(agg.series, dtype=np.float64)
    if series.ndim != 2 or series.shape[1] != duration.windows:
        raise ValueError(
            f"series has shape {series.shape}, expected (n_dois, {duration.windows}) for duration {duration.name!r}"
        )
    n = series.shape[0]
    sums: dict[str, FloatArray] = {}
    for field in fields(Aggregates):
        if field.name == "series":
            continue
        column = np.asarray(getattr(agg, field.name), dtype=np.float64)
        if column.shape != (n,):
            raise ValueError(f"aggregate {field.name!r} has shape {column.shape}, expected ({n},)")
        if not np.isfinite(column).all():
            raise ValueError(f"aggregate {field.name!r} contains NaN or infinity")
        sums[field.name] = column
    if not np.isfinite(series).all():
        raise ValueError("series contains NaN or infinity")
    return sums, series


def _finite(values: FloatArray) -> FloatArray:
    """Last-resort guard: only sums of finite values beyond ±1.8e308 can get here."""
    return np.nan_to_num(values, nan=0.0, posinf=_MAX, neginf=-_MAX)


# --------------------------------------------------------------------------- series statistics
# Each takes a block ``x`` of shape (DOIs, windows), oldest window first, and returns one
# value per DOI.


def sample_stddev(x: FloatArray) -> FloatArray:
    """Sample standard deviation (ddof=1); 0 for a single window, where it is undefined."""
    windows = x.shape[1]
    if windows < 2:
        return np.zeros(x.shape[0])
    deviation = x - x.mean(axis=1, keepdims=True)
    result: FloatArray = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / (windows - 1))
    return result


def ema_weights(windows: int) -> FloatArray:
    """Weights ``w`` with ``ema_last = x @ w`` for the seeded EMA of the module docstring.

    Unrolling the recursion into one dot product makes it a single BLAS call for a whole
    block; the weights sum to 1, so the result differs from the recursion by rounding only.
    """
    decay = 1.0 - EMA_ALPHA
    powers = decay ** np.arange(windows - 1, -1, -1, dtype=np.float64)
    weights = EMA_ALPHA * powers
    weights[0] = powers[0]  # the seed x_0 carries (1 - alpha)^(windows - 1)
    return weights


def ema_last(x: FloatArray) -> FloatArray:
    """Last value of the EMA (period 10, seeded with the first window)."""
    return x @ ema_weights(x.shape[1])


def kama_last(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Last KAMA value and last efficiency ratio (ER period 10, fast 2, slow 30).

    The recursion runs over time (``windows − p`` steps), each step for the whole block.
    """
    m, windows = x.shape
    if windows < 2:
        return x[:, 0].copy() if windows else np.zeros(m), np.zeros(m)
    period = min(KAMA_ER_PERIOD, windows - 1)
    steps = np.abs(np.diff(x, axis=1))  # steps[:, k] = |x_{k+1} - x_k|
    # volatility[:, t - period] = sum of |x_k - x_{k-1}| for k = t-period+1 .. t
    volatility = np.lib.stride_tricks.sliding_window_view(steps, period, axis=1).sum(axis=2)
    direction = np.abs(x[:, period:] - x[:, :-period])
    moving = volatility > 0.0
    er = np.where(moving, direction / np.where(moving, volatility, 1.0), 0.0)
    sc = (er * (_KAMA_FAST_SC - _KAMA_SLOW_SC) + _KAMA_SLOW_SC) ** 2
    kama = x[:, period - 1].copy()
    for t in range(period, windows):
        kama += sc[:, t - period] * (x[:, t] - kama)
    return kama, er[:, -1].copy()


def holt_forecast(x: FloatArray) -> FloatArray:
    """One-window-ahead forecast of Holt's linear method, fitted on the alpha × beta grid.

    State arrays have shape (DOIs, grid points): every DOI is fitted with every pair in
    one pass over time, in place (no temporaries per step); the pair with the least SSE
    wins per DOI (first one on ties: smallest alpha, then smallest beta).
    """
    m, windows = x.shape
    if windows == 1:
        return x[:, 0].copy()
    alpha = np.repeat(np.asarray(HOLT_ALPHAS), len(HOLT_BETAS))
    alpha_beta = alpha * np.tile(np.asarray(HOLT_BETAS), len(HOLT_ALPHAS))
    grid = alpha.size
    level = np.repeat(x[:, 1:2], grid, axis=1)
    trend = np.repeat(x[:, 1:2] - x[:, 0:1], grid, axis=1)
    sse = np.zeros((m, grid))
    forecast = np.empty((m, grid))
    error = np.empty((m, grid))
    scratch = np.empty((m, grid))
    for t in range(2, windows):
        np.add(level, trend, out=forecast)
        np.subtract(x[:, t : t + 1], forecast, out=error)
        np.multiply(error, error, out=scratch)
        sse += scratch
        np.multiply(error, alpha, out=scratch)
        np.add(forecast, scratch, out=level)
        np.multiply(error, alpha_beta, out=scratch)
        trend += scratch
    best = np.argmin(sse, axis=1)
    rows_ = np.arange(m)
    forecast_ahead: FloatArray = level[rows_, best] + trend[rows_, best]
    return forecast_ahead


def pairwise_statistics(x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Theil–Sen slope, Mann–Kendall ``S`` and its tie-corrected variance, per DOI.

    One (DOIs × pairs) difference array serves both. It is filled lag by lag
    (``x[:, lag:] − x[:, :-lag]``, 59 slice subtractions instead of a gather). ``S`` is
    the sum of the signs of the differences (taken before dividing: a tiny difference
    divided by the lag may underflow to 0, its sign must not). The slopes are the
    differences divided by the lag, the same float division as pymannkendall's
    ``(x[j] − x[i]) / (j − i)``, and their median is formed as ``np.median`` forms it
    (the two middle values averaged as ``(a + b) / 2``), so it is bit-identical to
    ``pymannkendall.sens_slope``; the order of the pairs does not matter to a median.
    Ties are counted from the sorted rows: a run of ``t`` equal values contributes
    ``t(t−1)(2t+5)``, as pymannkendall's ``np.unique`` loop does (all integers, exact in
    float64).
    """
    m, windows = x.shape
    n = float(windows)
    if windows < 2:
        return np.zeros(m), np.zeros(m), np.zeros(m)
    n_pairs = windows * (windows - 1) // 2
    difference = np.empty((m, n_pairs))
    blocks: list[tuple[int, slice]] = []
    offset = 0
    for lag in range(1, windows):
        block = slice(offset, offset + windows - lag)
        np.subtract(x[:, lag:], x[:, :-lag], out=difference[:, block])
        blocks.append((lag, block))
        offset = block.stop
    s = (np.count_nonzero(difference > 0.0, axis=1) - np.count_nonzero(difference < 0.0, axis=1)).astype(np.float64)
    for lag, block in blocks[1:]:
        difference[:, block] /= lag
    slope = _median_rows(difference)

    ordered = np.sort(x, axis=1)
    new_run = np.ones((m, windows), dtype=bool)
    new_run[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run_id = np.cumsum(new_run, axis=1) - 1 + np.arange(m)[:, None] * windows
    run_length = np.bincount(run_id.ravel(), minlength=m * windows).reshape(m, windows)
    t = run_length.astype(np.float64)
    ties = (t * (t - 1.0) * (2.0 * t + 5.0)).sum(axis=1)
    var_s = (n * (n - 1.0) * (2.0 * n + 5.0) - ties) / 18.0
    return slope, s, var_s


def _median_rows(values: FloatArray) -> FloatArray:
    """Row medians equal to ``np.median(values, axis=1)`` bit for bit, about twice as fast.

    One partition around the upper middle element, then the lower middle element is the
    largest value left of it; averaged as ``(a + b) / 2`` exactly like ``np.median``.
    The input is partitioned in place (it is a scratch array of the caller).
    """
    size = values.shape[1]
    half = size // 2
    values.partition(half, axis=1)
    upper = values[:, half]
    if size % 2:
        return upper.copy()
    median: FloatArray = (values[:, :half].max(axis=1) + upper) / 2.0
    return median


def mann_kendall_z(s: FloatArray, var_s: FloatArray) -> FloatArray:
    """Continuity-corrected ``z`` of pymannkendall; 0 when ``S = 0`` (incl. ``var_S = 0``)."""
    root = np.sqrt(np.where(var_s > 0.0, var_s, 1.0))
    return np.where(s > 0.0, (s - 1.0) / root, np.where(s < 0.0, (s + 1.0) / root, 0.0))


def two_sided_p(z: FloatArray) -> FloatArray:
    """``2·(1 − Φ(|z|))`` with Φ evaluated as scipy's ``ndtr`` does (no scipy needed).

    ``ndtr(a)`` is ``0.5 + 0.5·erf(a/√2)`` for ``|a| < 1`` and ``1 − 0.5·erfc(a/√2)``
    otherwise; the same expressions here make the p-values agree with pymannkendall to
    about 1e-15 absolute (including the 0.0 it returns beyond ``|z| ≈ 8.3``), without
    making scipy a dependency of the worker's math.
    """
    x = np.abs(z) / np.sqrt(2.0)
    near = x < np.sqrt(0.5)
    phi = np.where(near, 0.5 + 0.5 * _erf_small(np.minimum(x, 1.0)), 1.0 - 0.5 * _erfc(x))
    return 2.0 * (1.0 - phi)


_SQRT_PI = float(np.sqrt(np.pi))
_ERF_SERIES_TERMS = 80
_ERFC_SPLIT = 2.5
_ERFC_FRACTION_DEPTH = 80


def _erf_small(x: FloatArray) -> FloatArray:
    """erf for ``0 <= x <= 2.5`` by the all-positive series (no cancellation).

    ``erf(x) = 2/√π · e^{−x²} · Σ_k x·(2x²)^k / (2k+1)!!``; 80 terms reach full double
    precision up to 2.5 (checked against scipy in the tests to ~1e-15 relative).
    """
    two_x2 = 2.0 * x * x
    term = x.copy()
    total = x.copy()
    for k in range(1, _ERF_SERIES_TERMS):
        term = term * two_x2 / (2 * k + 1)
        total += term
    return 2.0 / _SQRT_PI * np.exp(-x * x) * total


def _erfc(x: FloatArray) -> FloatArray:
    """erfc for ``x >= 0``: ``1 − erf`` below 2.5, Laplace's continued fraction above.

    ``erfc(x) = e^{−x²}/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))``, evaluated bottom-up
    with 80 levels (~4e-15 relative from 2.5 on). Below 2.5 the absolute error of
    ``1 − erf`` is ~1e-15, which is all the p-value needs.
    """
    small = 1.0 - _erf_small(np.minimum(x, _ERFC_SPLIT))
    y = np.maximum(x, _ERFC_SPLIT)
    fraction = y.copy()
    for k in range(_ERFC_FRACTION_DEPTH, 0, -1):
        fraction = y + (k / 2.0) / fraction
    large = np.exp(-y * y) / _SQRT_PI / fraction
    return np.where(x < _ERFC_SPLIT, small, large)
