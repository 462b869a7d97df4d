"""One contract for every event store: PostgreSQL here, InfluxDB 2 when INFLUXDB_V2_URL is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing
from functools import partial

import pytest

from tests.support.sample_points import measured
from tests.support.stored_events import influx_events, postgres_events
from worker.core.events import Point
from worker.store import EventStore

pytestmark = pytest.mark.contract

S = 1_000_000_000
T0 = 1_700_000_000 * S


def point(event_id: str, doi: str, t_ns: int, score: float = 1.0) -> Point:
    return Point(event_id, doi, t_ns, score, 0.5, 100, 120, 1, 0, 2.0, 0.25, 3.0, 1.0, 4.0, 5.0)


#: Reads a store's events of one DOI in ``[start_ns, stop_ns)`` back, oldest first.
Read = Callable[[str, int, int], list[Point]]


@pytest.fixture(params=["postgres", "influxdb"])
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[EventStore, Read]]:
    if request.param == "postgres":
        from worker.store.postgres.store import PostgresStore

        dsn = request.getfixturevalue("pg_dsn")
        store = PostgresStore(dsn)
        yield store, partial(postgres_events, dsn)
        store.close()
    else:
        from tests.support.influx_live import admin_client, live_settings, live_store, require_server

        require_server()
        settings = live_settings()  # retention 0 (for ever): the fixed test times are years old
        with live_store(settings) as influx, closing(admin_client(settings)) as client:
            yield influx, partial(influx_events, client, influx.layout)


@pytest.fixture
def store(backend: tuple[EventStore, Read]) -> EventStore:
    return backend[0]


@pytest.fixture
def read_events(backend: tuple[EventStore, Read]) -> Read:
    return backend[1]


def test_write_and_read_back(store: EventStore, read_events: Read) -> None:
    points = [point(f"e{i}", "10.1/a", T0 + i * S, float(i)) for i in range(5)]
    store.write(points)
    got = read_events("10.1/a", T0, T0 + 10 * S)
    if store.name == "postgres":  # InfluxDB keeps no event id (it is not a field of SPEC §2)
        assert [p.event_id for p in got] == [f"e{i}" for i in range(5)]
    assert [p.score for p in got] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert got[0].followers == 100 and got[0].content_score == 5.0


def test_rewrite_is_idempotent(store: EventStore) -> None:
    points = [point(f"e{i}", "10.1/b", T0 + i * S) for i in range(3)]
    store.write(points)
    store.write(points)
    store.write(points[1:])
    assert store.count_per_doi(T0, T0 + 10 * S) == {"10.1/b": 3}


def test_an_event_twice_in_one_batch_is_stored_once(store: EventStore) -> None:
    first = point("dup", "10.1/f", T0, score=1.0)
    store.write([first, point("other", "10.1/f", T0 + S), first])
    assert store.count_per_doi(T0, T0 + 10 * S) == {"10.1/f": 2}


def test_two_events_same_doi_same_second_both_count(store: EventStore) -> None:
    store.write([point("x1", "10.1/c", T0), point("x2", "10.1/c", T0)])
    assert store.count_per_doi(T0, T0 + S) == {"10.1/c": 2}


def test_time_range_is_half_open_and_per_doi(store: EventStore, read_events: Read) -> None:
    store.write([point("a", "10.1/d", T0), point("b", "10.1/d", T0 + 5 * S), point("c", "10.1/e", T0 + 2 * S),
                 point("d", "10.1/d", T0 + 10 * S)])
    assert store.count_per_doi(T0, T0 + 10 * S) == {"10.1/d": 2, "10.1/e": 1}
    assert [p.score for p in read_events("10.1/d", T0 + S, T0 + 11 * S)] == [1.0, 1.0]
    assert read_events("10.1/none", T0, T0 + 10 * S) == []


def test_awkward_dois_and_ids(store: EventStore, read_events: Read) -> None:
    doi = '10.1002/(SICI)1097-4636 "x"\ttab\\back,=comma'
    store.write([point("id with\ttab\nand newline", doi, T0)])
    assert store.count_per_doi(T0, T0 + S) == {doi: 1}
    assert len(read_events(doi, T0, T0 + S)) == 1


def test_values_survive_exactly(store: EventStore, read_events: Read) -> None:
    """Every float bit, big integers and non-ASCII text come back as written."""
    awkward = Point("ü-1", "10.1/ü—漢字", T0 + 123_456_000, 0.1 + 0.2, -0.0, 2**53 + 1, 0, 0, 0,
                    5e-324, 1e308, -1.5e-300, 1.0, 2.0, 3.0)
    store.write([awkward])
    (got,) = read_events(awkward.doi, T0, T0 + S)
    assert measured(got) == measured(awkward)
    assert got.time_ns == awkward.time_ns


def test_postgres_refused_points_are_isolated(pg_dsn: str) -> None:
    """A point PostgreSQL refuses as data costs only itself: the others are written and
    StoreRejected names exactly the refused ones (bisection), for the dead letters."""
    from worker.store import StoreRejected
    from worker.store.postgres.store import PostgresStore

    store = PostgresStore(pg_dsn)
    good = [point(f"g{i}", "10.1/ok", T0 + i * S) for i in range(37)]
    too_long = Point("long", "10.1/ok", T0, 1.0, 0.5, 100, 2**40, 1, 0, 2.0, 0.25, 3.0, 1.0, 4.0, 5.0)
    bad = [point("nul\x00id", "10.1/ok", T0), point("other", "10.1/\x00", T0), too_long]
    batch = [*good[:5], bad[0], *good[5:30], bad[1], *good[30:], bad[2]]
    with pytest.raises(StoreRejected) as caught:
        store.write(batch)
    assert caught.value.rejected == bad
    assert "0x00" in str(caught.value)
    assert store.count_per_doi(T0, T0 + 100 * S) == {"10.1/ok": 37}
    store.close()
