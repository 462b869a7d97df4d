"""Benchmark: vectorized trend math against a straightforward per-DOI baseline.

Run ``python -m bench.trend_math`` (or ``python bench/trend_math.py``); ``--quick`` runs
only 1,000 DOIs. Synthetic events: about 100 per DOI at uniform random ages over the
``currently`` duration (6 h, 60 windows of 6 min).

The vectorized path is ``aggregate_events`` (``tests/support/event_columns.py``: what the
stores do in their databases) + ``compute_trends`` (``rows()`` is timed apart, it is the
hand-over to PostgreSQL). The baseline is what one would write first:
pandas ``groupby`` per DOI for the aggregates and the window series, then per series
``pymannkendall.original_test`` + ``sens_slope``, statsmodels ``Holt(series, initialization_method="estimated").fit()``,
pandas ``ewm`` and a KAMA loop. Its cost per DOI does not depend on how many DOIs there
are, so it is measured on a sample and extrapolated (the table says so). The same run
also checks that both paths agree where they should (Theil–Sen, Mann–Kendall).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.event_columns import EventColumns, aggregate_events
from worker.core.aggregates import TrendColumns
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.trends.math import compute_trends, rows

CURRENTLY = next(d for d in DEFAULT_DURATIONS if d.name == "currently")
EVENTS_PER_DOI = 100
BASELINE_SAMPLE = 300


def synthetic_events(n_dois: int, duration: Duration, seed: int = 1) -> EventColumns:
    """~100 events per DOI (Poisson), uniform ages over the span, plausible field values."""
    rng = np.random.default_rng(seed)
    per_doi = rng.poisson(EVENTS_PER_DOI, n_dois)
    n = int(per_doi.sum())
    return EventColumns(
        doi_index=np.repeat(np.arange(n_dois, dtype=np.int64), per_doi),
        age_s=rng.uniform(0.0, duration.span_s, n),
        score=rng.lognormal(2.5, 1.0, n),
        sentiment_raw=rng.normal(0.0, 0.4, n),
        followers=rng.integers(0, 100_000, n).astype(np.float64),
        length=rng.integers(10, 280, n).astype(np.float64),
        questions=rng.integers(0, 3, n).astype(np.float64),
        exclamations=rng.integers(0, 3, n).astype(np.float64),
        bot_rating=rng.uniform(0.0, 100.0, n),
        contains_abstract_raw=rng.uniform(0.0, 1.0, n),
    )


def vectorized(cols: EventColumns, n_dois: int, duration: Duration) -> TrendColumns:
    return compute_trends(aggregate_events(cols, n_dois, duration), duration)


def time_vectorized(n_dois: int, duration: Duration, repeat: int) -> tuple[int, float, float]:
    """(events, best-of-``repeat`` seconds of the math, seconds of ``rows()``)."""
    cols = synthetic_events(n_dois, duration)
    best = float("inf")
    result: TrendColumns | None = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = vectorized(cols, n_dois, duration)
        best = min(best, time.perf_counter() - start)
    assert result is not None
    dois = [f"10.1/{k}" for k in range(n_dois)]
    start = time.perf_counter()
    rows(dois, result)
    return int(cols.doi_index.size), best, time.perf_counter() - start


def kama_loop(x: np.ndarray, period: int = 10) -> tuple[float, float]:
    fast, slow = 2 / 3, 2 / 31
    kama, er = float(x[period - 1]), 0.0
    for t in range(period, len(x)):
        volatility = float(np.abs(np.diff(x[t - period : t + 1])).sum())
        er = abs(x[t] - x[t - period]) / volatility if volatility > 0 else 0.0
        kama += (er * (fast - slow) + slow) ** 2 * (x[t] - kama)
    return kama, er


def baseline(cols: EventColumns, n_dois: int, duration: Duration) -> list[dict[str, Any]]:
    """The per-DOI implementation: one pandas group and one series fit at a time."""
    import pymannkendall as mk
    from statsmodels.tsa.holtwinters import Holt

    frame = pd.DataFrame({f.name: getattr(cols, f.name) for f in fields(EventColumns)})
    out: list[dict[str, Any]] = []
    for _, group in frame.groupby("doi_index", sort=True):
        age = group["age_s"]
        window = duration.windows - 1 - (age // duration.window_s).astype(int)
        inside = window >= 0
        series = (
            group["score"][inside]
            .groupby(window[inside])
            .sum()
            .reindex(range(duration.windows), fill_value=0.0)
            .to_numpy(dtype=np.float64)
        )
        test = mk.original_test(series)
        slope = mk.sens_slope(series).slope
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            holt = float(Holt(series, initialization_method="estimated").fit().forecast(1)[0])
        kama, ker = kama_loop(series)
        out.append(
            {
                "score": float((group["score"] * np.exp(duration.gravity * age)).sum()),
                "count": len(group),
                "mean_sentiment": group["sentiment_raw"].mean(),
                "sum_followers": group["followers"].sum(),
                "abstract_difference": group["contains_abstract_raw"].mean(),
                "mean_age": age.mean(),
                "mean_length": group["length"].mean(),
                "mean_questions": group["questions"].mean(),
                "mean_exclamations": group["exclamations"].mean(),
                "mean_bot_rating": group["bot_rating"].mean(),
                "mean_score": group["score"].mean(),
                "stddev": float(pd.Series(series).std()),
                "ema": float(pd.Series(series).ewm(span=10, adjust=False).mean().iloc[-1]),
                "kama": kama,
                "ker": ker,
                "projected_change": holt,
                "trending": float(slope),
                "mk_trend": test.trend,
                "mk_p": float(test.p),
            }
        )
    return out


def agreement(ours: TrendColumns, theirs: list[dict[str, Any]]) -> str:
    """Where both paths must agree, do they? (Holt differs by design: statsmodels optimizes
    alpha/beta and the initial state, we search a fixed grid.)"""
    n = len(theirs)
    slope_diff = max(abs(ours.trending[k] - theirs[k]["trending"]) for k in range(n))
    p_diff = max(abs(ours.mk_p[k] - theirs[k]["mk_p"]) for k in range(n))
    trends_equal = sum(ours.mk_trend[k] == theirs[k]["mk_trend"] for k in range(n))
    score_rel = max(abs(ours.score[k] - theirs[k]["score"]) / abs(theirs[k]["score"]) for k in range(n))
    holt_gap = np.median(
        [abs(ours.projected_change[k] - theirs[k]["projected_change"]) / max(ours.stddev[k], 1e-12) for k in range(n)]
    )
    return (
        f"agreement on the {n}-DOI sample: max |Δ trending| = {slope_diff:.1e}, "
        f"max |Δ mk_p| = {p_diff:.1e}, mk_trend equal {trends_equal}/{n}, "
        f"max rel |Δ score| = {score_rel:.1e}; Holt grid vs statsmodels optimizer: "
        f"median |Δ forecast| = {holt_gap:.2f} series stddev"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only 1,000 DOIs")
    args = parser.parse_args(argv)
    sizes = [1_000] if args.quick else [1_000, 10_000, 50_000]
    duration = CURRENTLY

    sample = BASELINE_SAMPLE
    sample_cols = synthetic_events(sample, duration, seed=2)
    start = time.perf_counter()
    theirs = baseline(sample_cols, sample, duration)
    baseline_rate = sample / (time.perf_counter() - start)
    ours_on_sample = vectorized(sample_cols, sample, duration)

    print(
        f"duration {duration.name!r}: span {duration.span_s} s, {duration.windows} windows of "
        f"{duration.window_s} s, ~{EVENTS_PER_DOI} events per DOI"
    )
    print(f"baseline measured on {sample} DOIs: {baseline_rate:,.0f} rows/s (extrapolated to every size)")
    print()
    header = f"{'DOIs':>8} {'events':>10} {'vectorized s':>13} {'rows/s':>10} {'rows() s':>9} "
    header += f"{'baseline rows/s':>16} {'baseline s (extrap.)':>21} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for n in sizes:
        events, seconds, rows_seconds = time_vectorized(n, duration, repeat=3 if n <= 10_000 else 1)
        rate = n / seconds
        print(
            f"{n:>8,} {events:>10,} {seconds:>13.3f} {rate:>10,.0f} {rows_seconds:>9.3f} "
            f"{baseline_rate:>16,.0f} {n / baseline_rate:>21,.1f} {rate / baseline_rate:>8.0f}x"
        )
    print()
    print(agreement(ours_on_sample, theirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
