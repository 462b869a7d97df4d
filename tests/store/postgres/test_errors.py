"""PostgreSQL store errors classified honestly, on a real server.

* data the server refuses (a key longer than an index entry) is a rejection of exactly
  those points, with the server's reason — not an outage retried for ever;
* concurrent batches sharing event ids take the unique index's locks in one order: no
  deadlock, so no conflict retry at all;
* an event that reuses a stored id with other content is not stored, and is counted;
* a server that goes away is unavailability (the task waits), by SQLSTATE, not by class;
  so is one connection of a trend query split over several, and only that one is replaced.
"""

from __future__ import annotations

import logging
import random
import string
import threading

import numpy as np
import psycopg2
import pytest

from tests.support.helpers import wait_for
from worker.core.durations import DEFAULT_DURATIONS
from worker.core.events import Point
from worker.store import StoreRejected, StoreUnavailable
from worker.store.postgres.store import PostgresStore, classify

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_700_000_000 * S


def point(event_id: str, doi: str = "10.1/a", t_ns: int = T0, score: float = 1.0) -> Point:
    return Point(event_id, doi, t_ns, score, 0.5, 100, 120, 1, 0, 2.0, 0.25, 3.0, 1.0, 4.0, 5.0)


def count(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM discussion_event")
        return int(cur.fetchone()[0])


def test_a_key_too_long_for_the_index_is_a_rejection_of_that_point_alone(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    batch = [point(f"e{i}") for i in range(20)]
    noise = "".join(random.Random(7).choices(string.ascii_letters, k=10_000))  # incompressible
    batch[7] = point("e7", doi="10.1/" + noise)  # the bridge refuses these; an older replay might not
    with pytest.raises(StoreRejected) as caught:
        store.write(batch)
    assert [p.event_id for p in caught.value.rejected] == ["e7"]
    assert "index row" in str(caught.value)
    assert count(pg_dsn) == 19


def test_concurrent_batches_sharing_ids_do_not_deadlock(pg_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="worker.store.postgres.store")
    pool = [point(f"id-{i:05d}", doi=f"10.1/{i % 50}", t_ns=T0 + i * S) for i in range(2000)]
    stores = [PostgresStore(pg_dsn), PostgresStore(pg_dsn)]
    errors: list[BaseException] = []
    written: set[str] = set()

    def writer(store: PostgresStore, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(30):
                batch = rng.sample(pool, 400)  # overlapping ids, in a different order each time
                store.write(batch)
                written.update(p.event_id for p in batch)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(store, seed)) for seed, store in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    retried = [r for r in caplog.records if r.getMessage() == "write conflict, trying again"]
    assert not retried, "the index's locks were taken in another order"
    assert count(pg_dsn) == len(written)  # each once


def test_reused_id_with_other_content_is_counted_and_not_stored(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    assert store.write([point("same", score=1.0), point("other")]) == 0
    assert store.write([point("same", score=1.0)]) == 0  # a redelivery: same content, no conflict
    assert store.write([point("same", score=9.0), point("new")]) == 1
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT score FROM discussion_event WHERE event_id = 'same'")
        assert cur.fetchone() == (1.0,)
    assert count(pg_dsn) == 3


def test_a_server_that_goes_away_is_unavailability(pg_dsn: str) -> None:
    store = PostgresStore(pg_dsn)
    store.write([point("a")])
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:  # kill the store's own connection
        cur.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "  # waits for the exit
                    "WHERE application_name = 'aggregator-store'")
    with pytest.raises(StoreUnavailable):
        store.write([point("b")])
    store.write([point("b")])  # reconnects
    assert count(pg_dsn) == 2


def store_backends(dsn: str) -> set[int]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'aggregator-store'")
        return {pid for (pid,) in cur.fetchall()}


def test_a_trend_query_part_that_loses_its_connection_is_unavailability_of_that_part_alone(pg_dsn: str) -> None:
    today = next(d for d in DEFAULT_DURATIONS if d.name == "today")
    dois = [f"10.1/{i}" for i in range(7)]
    store = PostgresStore(pg_dsn, query_connections=3)
    store.write([point(f"e{i}", doi=dois[i % 7], t_ns=T0 - i * 60 * S, score=1.0 + i) for i in range(70)])
    want = store.trend_inputs(today, T0, dois)
    first = store_backends(pg_dsn)
    assert len(first) == 3  # one backend per part
    for victim in sorted(first):
        with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
            # with a timeout the call returns once the backend has exited, so pg_stat_activity no longer lists it
            cur.execute("SELECT pg_terminate_backend(%s, 10000)", (victim,))
        with pytest.raises(StoreUnavailable):
            store.trend_inputs(today, T0, dois)
        assert store_backends(pg_dsn) == first - {victim}  # the other parts' connections are kept
        got = store.trend_inputs(today, T0, dois)  # reconnects
        np.testing.assert_array_equal(got.series, want.series)
        np.testing.assert_array_equal(got.decayed_score, want.decayed_score)
        first = store_backends(pg_dsn)
        assert len(first) == 3
    store.close()
    # a backend leaves pg_stat_activity after it has read the client's goodbye, a moment after close() returns
    wait_for(lambda: store_backends(pg_dsn) == set(), timeout=10, what="the store's backends to exit")
    assert not [t for t in threading.enumerate() if t.name.startswith("trend-query")]


@pytest.mark.parametrize(("state", "kind"), [
    ("40P01", "conflict"), ("40001", "conflict"), ("54000", "data"), ("22021", "data"), ("23502", "data"),
    ("08006", "unavailable"), ("57P01", "unavailable"), ("53100", "unavailable"), ("42P01", "unavailable"),
    (None, "unavailable"),
])
def test_classification_is_by_sqlstate(state: str | None, kind: str) -> None:
    class Fake(psycopg2.OperationalError):
        pgcode = state

    assert classify(Fake("x")) == kind
