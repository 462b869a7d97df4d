"""Store contract for the trend queries: what a store computes in its database equals the
pure math's aggregation of the same events (so every backend gives the same trend rows).

The expectation is computed from the events as written (their own timestamps, with their
sub-second parts), never from what a store keeps: ages are whole seconds
(``worker.core.alignment``), and events sit on every window edge and both span ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date

import numpy as np
import pytest

from tests.support.sample_points import reference_aggregates
from tests.support.trend_seed import S, roll_up, seed_events
from worker.core import alignment
from worker.core.durations import DEFAULT_DURATIONS, Duration
from worker.core.events import Point
from worker.store import EventStore
from worker.trends.math import compute_trends, rows

pytestmark = pytest.mark.contract

NOW = 1_700_000_000 * S
EDGE_FRACTIONS_NS = (0, 1_000, 999_999_000)  # PostgreSQL keeps microseconds


@pytest.fixture(params=["postgres", "postgres-3-connections", "postgres-rollup", "influxdb"])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    if request.param == "influxdb":
        from tests.support.influx_live import live_store

        with live_store() as influx:  # skips without INFLUXDB_V2_URL
            yield influx
        return
    from worker.store.postgres.store import PostgresStore

    # Three connections split the five DOIs below into interleaved parts of 2, 2 and 1; with
    # the rollup, every DOI reads its whole days from it (the threshold is 0 events).
    connections = 3 if request.param == "postgres-3-connections" else 1
    postgres = PostgresStore(request.getfixturevalue("pg_dsn"), query_connections=connections,
                             rollup_min_events=0 if request.param == "postgres-rollup" else None)
    yield postgres
    postgres.close()


@pytest.fixture
def roll_up_days(request: pytest.FixtureRequest) -> Callable[[], object]:
    """The maintenance task's roll-up, for the store that reads the rollup; a no-op for the others."""
    if request.node.callspec.params.get("store") != "postgres-rollup":
        return lambda: None
    dsn = request.getfixturevalue("pg_dsn")
    return lambda: roll_up(dsn, date.max)


def edge_events(duration: Duration, doi: str) -> list[Point]:
    """Events on every window edge and both span ends, and just outside the span."""
    backs = sorted({k * duration.window_s for k in range(duration.windows + 1)} | {duration.span_s})
    points = []
    for back in backs:
        for fraction in EDGE_FRACTIONS_NS:
            points.append(edge_point(f"edge-{back}-{fraction}", doi, NOW - back * S + fraction, back))
    points.append(edge_point("after-now", doi, NOW + S, 1))  # the next second: not in
    points.append(edge_point("before-span", doi, NOW - (duration.span_s + 1) * S + 999_999_000, 2))
    return points


def edge_point(event_id: str, doi: str, time_ns: int, seed: int) -> Point:
    return Point(event_id, doi, time_ns, 1.0 + seed % 7, 0.25, 100 + seed % 11, 120, 1, 0, 2.0, 0.5, 3.0, 1.0,
                 4.0, 5.0)


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_store_aggregates_equal_the_pure_aggregation(store: EventStore, roll_up_days: Callable[[], object],
                                                     duration: Duration) -> None:
    counts = {"10.1/a": 40, "10.1/b": 12, "10.1/c": 3, "10.1/d": 0}
    seed = DEFAULT_DURATIONS.index(duration)
    points = seed_events(store, NOW, {k: v for k, v in counts.items() if v}, duration.span_s, seed=seed)
    # An event just older than the span and one in the future must not count (distinct ids:
    # a colliding id would be dropped by ON CONFLICT and prove nothing).
    points += seed_events(store, NOW - duration.span_s * S - 5 * S, {"10.1/a": 1}, 1, seed=1, id_prefix="old-")
    points += seed_events(store, NOW + 5 * S, {"10.1/a": 1}, 1, seed=1, id_prefix="future-")
    edges = edge_events(duration, "10.1/e")
    store.write(edges)
    points += edges
    roll_up_days()
    assert store.count_per_doi(NOW - duration.span_s * S - 10 * S, NOW + 10 * S)["10.1/a"] == 42
    dois = [*counts, "10.1/e"]
    in_span = sum(alignment.in_span(duration, NOW, p.time_ns) for p in edges)
    assert in_span == len(edges) - 2
    qualifying = [doi for doi, n in {**counts, "10.1/e": in_span}.items() if n > duration.min_events]
    assert store.qualifying_dois(duration, NOW) == qualifying
    got = store.trend_inputs(duration, NOW, dois)

    want = reference_aggregates(points, dois, NOW, duration)
    assert got.count.tolist() == want.count.tolist()
    assert got.count[dois.index("10.1/e")] == in_span
    np.testing.assert_array_equal(got.series != 0, want.series != 0)  # every event in its window
    for field in ("count", "sum_score", "decayed_score", "sum_age", "sum_sentiment", "sum_followers",
                  "sum_abstract", "sum_length", "sum_questions", "sum_exclamations", "sum_bot_rating", "series"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-9, atol=1e-6, err_msg=field)
    assert rows(dois, compute_trends(got, duration))[0]["count"] == 40
