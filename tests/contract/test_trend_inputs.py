"""Store contract for the trend queries: what a store computes in its database equals the
pure math's aggregation of the same events (so every backend gives the same trend rows)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from trend_seed import S, seed_events

from worker.durations import DEFAULT_DURATIONS
from worker.trends.math import EventColumns, aggregate_events, compute_trends, rows

NOW = 1_700_000_000 * S


@pytest.fixture(params=["postgres", "influxdb"])
def backend(request: pytest.FixtureRequest):
    if request.param == "influxdb":
        if not os.environ.get("INFLUXDB_V2_URL"):
            pytest.skip("INFLUXDB_V2_URL not set: no InfluxDB 2 on this machine")
        pytest.skip("covered by tests/integration/test_influx_live.py against a live server")
    from worker.store.postgres import PostgresStore

    dsn = request.getfixturevalue("pg_dsn")
    yield dsn, PostgresStore(dsn)


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_store_aggregates_equal_the_pure_aggregation(backend, duration) -> None:
    dsn, store = backend
    counts = {"10.1/a": 40, "10.1/b": 12, "10.1/c": 3, "10.1/d": 0}
    seed = DEFAULT_DURATIONS.index(duration)
    points = seed_events(dsn, NOW, {k: v for k, v in counts.items() if v}, duration.span_s, seed=seed)
    # An event just older than the span and one in the future must not count (distinct ids:
    # a colliding id would be dropped by ON CONFLICT and prove nothing).
    seed_events(dsn, NOW - duration.span_s * S - 5 * S, {"10.1/a": 1}, 1, seed=1, id_prefix="old-")
    seed_events(dsn, NOW + 5 * S, {"10.1/a": 1}, 1, seed=1, id_prefix="future-")
    assert store.count_per_doi(NOW - duration.span_s * S - 10 * S, NOW + 10 * S)["10.1/a"] == 42
    dois = list(counts)
    assert store.qualifying_dois(duration, NOW) == (["10.1/a", "10.1/b"] if duration.min_events < 12 else ["10.1/a"])
    got = store.trend_inputs(duration, NOW, dois)

    index = {d: i for i, d in enumerate(dois)}
    cols = EventColumns(
        doi_index=np.array([index[p.doi] for p in points], dtype=np.int64),
        age_s=np.array([(NOW - p.time_ns) / S for p in points]),
        **{name: np.array([float(getattr(p, attr)) for p in points]) for name, attr in [
            ("score", "score"), ("sentiment_raw", "sentiment_raw"), ("followers", "followers"),
            ("length", "length"), ("questions", "questions"), ("exclamations", "exclamations"),
            ("bot_rating", "bot_rating"), ("contains_abstract_raw", "contains_abstract_raw")]},
    )
    want = aggregate_events(cols, len(dois), duration)
    for field in ("count", "sum_score", "decayed_score", "sum_age", "sum_sentiment", "sum_followers",
                  "sum_abstract", "sum_length", "sum_questions", "sum_exclamations", "sum_bot_rating", "series"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-9, atol=1e-6, err_msg=field)
    assert rows(dois, compute_trends(got, duration))[0]["count"] == 40
    store.close()
