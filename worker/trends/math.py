"""Trend math for many DOIs at once (SPEC §4; the parameters it leaves open are in
docs/trends.md, "The math"): pure numpy, no I/O.

Every quantity is computed for all DOIs of a chunk in one array operation: per-DOI Python
(pandas, ``pymannkendall``, statsmodels' Holt at ~25 ms a fit) manages a few dozen rows a
second (``bench/trend_math.py``). Loops run only over time, over blocks of DOIs and over
the terms of a series. :func:`compute_trends` turns the :class:`Aggregates` a store
computed in its database into the trend columns.
No NaN or infinity ever leaves this module: non-finite inputs are refused, and a DOI
without events or with a constant series gets numbers (zeros, ``'no trend'``, ``p = 1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from worker.core.aggregates import TREND_COLUMNS as TREND_COLUMNS
from worker.core.aggregates import Aggregates, FloatArray, TrendColumns
from worker.core.durations import Duration

EMA_PERIOD = 10
EMA_ALPHA = 2.0 / (EMA_PERIOD + 1)

KAMA_ER_PERIOD = 10
_KAMA_FAST_SC = 2.0 / (2 + 1)
_KAMA_SLOW_SC = 2.0 / (30 + 1)

# i / 20 and i / 10 are the doubles nearest to 0.05·i and 0.1·i, as the literals would be.
HOLT_ALPHAS: tuple[float, ...] = tuple(i / 20 for i in range(1, 21))
HOLT_BETAS: tuple[float, ...] = tuple(i / 10 for i in range(0, 11))

MK_ALPHA = 0.05
#: ``scipy.stats.norm.ppf(1 - MK_ALPHA / 2)``, the bound pymannkendall compares ``|z|`` with.
MK_Z_CRITICAL = 1.959963984540054

# DOIs per block: bounds the (DOIs × 1770 pairs) and (DOIs × 220 grid points) arrays and
# keeps them in cache; 128 was fastest on a 2-core machine.
CHUNK_DOIS = 128

_MAX = float(np.finfo(np.float64).max)


#: Each mean column and the per-DOI sum it divides by the event count.
_MEANS = {
    "mean_sentiment": "sum_sentiment",
    "abstract_difference": "sum_abstract",
    "mean_age": "sum_age",
    "mean_length": "sum_length",
    "mean_questions": "sum_questions",
    "mean_exclamations": "sum_exclamations",
    "mean_bot_rating": "sum_bot_rating",
    "mean_score": "sum_score",
}


def _checked_sums(agg: Aggregates, n: int) -> dict[str, FloatArray]:
    """Every per-DOI sum of ``agg`` as float64 of shape ``(n,)``, all finite."""
    sums: dict[str, FloatArray] = {}
    for field in fields(agg):
        if field.name == "series":
            continue
        column = np.asarray(getattr(agg, field.name), dtype=np.float64)
        if column.shape != (n,):
            raise ValueError(f"aggregate {field.name!r} has shape {column.shape}, expected ({n},)")
        if not np.isfinite(column).all():
            raise ValueError(f"aggregate {field.name!r} contains NaN or infinity")
        sums[field.name] = column
    return sums


def compute_trends(agg: Aggregates, duration: Duration) -> TrendColumns:
    """All trend columns of all DOIs in ``agg``; a mean is 0 for a DOI without events."""
    series = np.asarray(agg.series, dtype=np.float64)
    if series.ndim != 2 or series.shape[1] != duration.windows:
        raise ValueError(
            f"series has shape {series.shape}, expected (n_dois, {duration.windows}) for duration {duration.name!r}"
        )
    if not np.isfinite(series).all():
        raise ValueError("series contains NaN or infinity")
    n = series.shape[0]
    sums = _checked_sums(agg, n)
    count = sums["count"]
    has_events = count > 0
    safe_count = np.where(has_events, count, 1.0)

    stats = np.empty((8, n))
    with np.errstate(over="ignore", under="ignore"):
        for start in range(0, n, CHUNK_DOIS):
            x = series[start : start + CHUNK_DOIS]
            stats[:, start : start + CHUNK_DOIS] = (
                sample_stddev(x), ema_last(x), *kama_last(x), holt_forecast(x), *pairwise_statistics(x))
        stddev, ema, kama, ker, holt, slope, mk_s, mk_var = stats
        mk_z = mann_kendall_z(mk_s, mk_var)
        mk_p = two_sided_p(mk_z)
    significant = np.abs(mk_z) > MK_Z_CRITICAL
    mk_trend = np.where(
        significant & (mk_z > 0),
        "increasing",
        np.where(significant & (mk_z < 0), "decreasing", "no trend"),
    ).astype("<U10")

    columns = {name: np.where(has_events, sums[total] / safe_count, 0.0) for name, total in _MEANS.items()}
    columns |= {"score": sums["decayed_score"], "count": count, "sum_followers": sums["sum_followers"],
                "stddev": stddev, "ema": ema, "kama": kama, "ker": ker, "projected_change": holt,
                "trending": slope, "mk_p": mk_p}
    # Last resort: only sums of finite values beyond ±1.8e308 can be non-finite here.
    finite = {name: np.nan_to_num(values, nan=0.0, posinf=_MAX, neginf=-_MAX) for name, values in columns.items()}
    return TrendColumns(mk_trend=mk_trend, **finite)


def rows(dois: Sequence[str], cols: TrendColumns) -> list[dict[str, Any]]:
    """One dict per DOI: ``{"doi": ..., <TREND_COLUMNS>...}``, ``count`` an ``int`` (a number of
    events). Plain Python values (``tolist``): staging writes each value's ``repr``, which
    for a numpy scalar is ``np.float64(…)``, not a number."""
    if len(dois) != len(cols):
        raise ValueError(f"{len(dois)} DOIs for {len(cols)} trend rows")
    lists: dict[str, list[Any]] = {name: getattr(cols, name).tolist() for name in TREND_COLUMNS}
    lists["count"] = [round(c) for c in lists["count"]]
    columns = [lists[name] for name in TREND_COLUMNS]
    return [
        {"doi": doi, **dict(zip(TREND_COLUMNS, values, strict=True))}
        for doi, *values in zip(dois, *columns, strict=True)
    ]


# Series statistics: each takes a block ``x`` of shape (DOIs, windows), oldest window
# first, and returns one value per DOI.


def sample_stddev(x: FloatArray) -> FloatArray:
    """Sample standard deviation (ddof=1, as InfluxDB's ``stddev()``); 0 for one window."""
    windows = x.shape[1]
    if windows < 2:
        return np.zeros(x.shape[0])
    deviation = x - x.mean(axis=1, keepdims=True)
    result: FloatArray = np.sqrt(np.einsum("ij,ij->i", deviation, deviation) / (windows - 1))
    return result


def ema_last(x: FloatArray) -> FloatArray:
    """Last value of the EMA with ``alpha = 2 / (EMA_PERIOD + 1)`` seeded with the oldest
    window (pandas ``ewm(span=10, adjust=False)``).

    The recursion is unrolled into one dot product (one BLAS call per block); the weights
    sum to 1, so the result differs from the recursion by rounding only.
    """
    powers = (1.0 - EMA_ALPHA) ** np.arange(x.shape[1] - 1, -1, -1, dtype=np.float64)
    weights = EMA_ALPHA * powers
    weights[0] = powers[0]  # the seed x_0 carries (1 - alpha)^(windows - 1)
    return x @ weights


def kama_last(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Last value of Kaufman's adaptive moving average and the last efficiency ratio.

    ER period ``p = min(10, windows − 1)``, fast 2, slow 30; ``ER_t = |x_t − x_{t−p}| /
    Σ_{k=t−p+1..t} |x_k − x_{k−1}|``, ``sc_t = (ER_t·(2/3 − 2/31) + 2/31)²``, seeded
    ``kama_{p−1} = x_{p−1}``, then ``kama_t += sc_t·(x_t − kama_{t−1})`` (TA-Lib's
    convention). A constant stretch (no volatility) has ER 0, not TA-Lib's 1: a DOI
    without events lately must not look like a perfectly efficient trend.
    """
    m, windows = x.shape
    if windows < 2:
        return x[:, 0].copy() if windows else np.zeros(m), np.zeros(m)
    period = min(KAMA_ER_PERIOD, windows - 1)
    steps = np.abs(np.diff(x, axis=1))
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
    """Holt's linear trend method forecast one window ahead (``projected_change``).

    ``level = x_1``, ``trend = x_1 − x_0``; for ``t = 2 ..``: ``f = level + trend``,
    ``e = x_t − f``, ``SSE += e²``, ``level = f + alpha·e``, ``trend += alpha·beta·e``.
    ``alpha``/``beta`` from the grid ``HOLT_ALPHAS × HOLT_BETAS`` with the least SSE, ties
    to the smaller alpha, then beta: a grid keeps the fit vectorized and deterministic.
    Every DOI is fitted with every pair in one pass over time, in place. One window
    forecasts ``x_0``, two ``2·x_1 − x_0``; the result is not clipped at 0.
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
    forecast_ahead: FloatArray = level[np.arange(m), best] + trend[np.arange(m), best]
    return forecast_ahead


def pairwise_statistics(x: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Theil–Sen slope, Mann–Kendall ``S`` and its tie-corrected variance, as pymannkendall's
    ``sens_slope`` and ``original_test`` compute them, bit for bit for the slope.

    One (DOIs × pairs) difference array, filled lag by lag, serves both. ``S`` counts the
    signs before dividing (a tiny difference divided by the lag may underflow to 0, its
    sign must not); the slopes are the same float division ``(x_j − x_i) / (j − i)`` and
    their median is formed as ``np.median`` forms it. A run of ``t`` equal values removes
    ``t(t−1)(2t+5)`` from ``n(n−1)(2n+5)`` (integers, exact in float64). A single window
    has slope 0 (pymannkendall: NaN).
    """
    m, windows = x.shape
    n = float(windows)
    if windows < 2:
        return np.zeros(m), np.zeros(m), np.zeros(m)
    difference = np.empty((m, windows * (windows - 1) // 2))
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
    t = np.bincount(run_id.ravel(), minlength=m * windows).reshape(m, windows).astype(np.float64)
    ties = (t * (t - 1.0) * (2.0 * t + 5.0)).sum(axis=1)
    var_s = (n * (n - 1.0) * (2.0 * n + 5.0) - ties) / 18.0
    return slope, s, var_s


def _median_rows(values: FloatArray) -> FloatArray:
    """Row medians equal to ``np.median(values, axis=1)`` bit for bit, about twice as fast.

    One partition around the upper middle element; the lower middle one is the largest
    value left of it; averaged as ``(a + b) / 2`` like ``np.median``. Partitions in place.
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
    """Continuity-corrected ``z`` of pymannkendall; 0 when ``S = 0`` (a constant series)."""
    root = np.sqrt(np.where(var_s > 0.0, var_s, 1.0))
    return np.where(s > 0.0, (s - 1.0) / root, np.where(s < 0.0, (s + 1.0) / root, 0.0))


_erf = np.vectorize(math.erf, otypes=[np.float64])
_erfc = np.vectorize(math.erfc, otypes=[np.float64])


def two_sided_p(z: FloatArray) -> FloatArray:
    """``2·(1 − Φ(|z|))`` with Φ formed as scipy's ``ndtr`` forms it (``0.5 + 0.5·erf`` below
    1, ``1 − 0.5·erfc`` above), so the p-values agree with pymannkendall to ~1e-15 and are
    0.0 where its are, without making scipy a dependency of the worker."""
    x = np.abs(z) / np.sqrt(2.0)
    phi = np.where(x < np.sqrt(0.5), 0.5 + 0.5 * _erf(x), 1.0 - 0.5 * _erfc(x))
    p: FloatArray = 2.0 * (1.0 - phi)
    return p
