"""InfluxStore against a real InfluxDB 2 (``INFLUXDB_V2_URL``, ``_TOKEN``, ``_ORG``).

Skipped where no server runs (there is none on the development machines: Debian ships only
InfluxDB 1.6). With a server, run e.g.::

    docker run -d -p 8086:8086 -e DOCKER_INFLUXDB_INIT_MODE=setup \
        -e DOCKER_INFLUXDB_INIT_USERNAME=admin -e DOCKER_INFLUXDB_INIT_PASSWORD=adminadmin \
        -e DOCKER_INFLUXDB_INIT_ORG=amba -e DOCKER_INFLUXDB_INIT_BUCKET=init \
        -e DOCKER_INFLUXDB_INIT_ADMIN_TOKEN=dev-token influxdb:2.7
    INFLUXDB_V2_URL=http://127.0.0.1:8086 INFLUXDB_V2_TOKEN=dev-token INFLUXDB_V2_ORG=amba \
        python -m pytest -m influx_live tests/integration/test_influx_live.py

Every run uses its own buckets (random suffix) and deletes them and its task afterwards.
The expected trend inputs are computed from the same points by ``worker.trends.math``,
so the server-side aggregation is checked against the reference implementation.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
from influxdb_client import InfluxDBClient

from worker.durations import Duration
from worker.events import Point
from worker.settings import Settings
from worker.store import flux
from worker.store.base import Aggregates
from worker.store.influx import InfluxStore, StoreRejected, event_timestamp_ns
from worker.trends.math import EventColumns, aggregate_events

pytestmark = [
    pytest.mark.influx_live,
    pytest.mark.skipif(
        not os.environ.get("INFLUXDB_V2_URL"),
        reason="INFLUXDB_V2_URL not set: no InfluxDB 2 on this machine",
    ),
]

NS = 1_000_000_000
DOI_A = "10.1101/2021.04.01.123456"
DOI_B = '10.1000/a b,c=d(é)"$x'  # escaping in line protocol, in strings and in the regex
DOI_NONE = "10.9999/no-events"
# One hour ago, on a whole second: inside any retention, outside no range used below.
BASE_NS = (time.time_ns() // NS - 3600) * NS
NOW_NS = BASE_NS + 600 * NS + 123_456_789
DURATION = Duration("live", 6 * 3600, -0.00036, 360, 60, 2, "*/3 * * * *")


def point(event_id: str, doi: str, offset_s: float, score: float) -> Point:
    return Point(
        event_id=event_id,
        doi=doi,
        time_ns=BASE_NS + int(offset_s * NS),
        score=score,
        sentiment_raw=0.25,
        followers=100 + len(event_id),
        length=180,
        questions=1,
        exclamations=2,
        bot_rating=10.0,
        contains_abstract_raw=0.5,
        time_score=20.0,
        type_factor=1.0,
        user_score=25.1,
        content_score=14.0,
    )


POINTS = [
    point("a-1", DOI_A, 0.1, 10.0),
    point("a-2", DOI_A, 0.7, 20.0),  # same second as a-1: both must count
    point("a-3", DOI_A, 420.0, 5.5),
    point("b-1", DOI_B, 30.0, 1.0),
    point("b-2", DOI_B, 400.0, 2.0),
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        event_store="influxdb",
        influxdb_v2_bucket=f"it_events_{suffix}",
        influxdb_v2_trend_bucket=f"it_trends_{suffix}",
        influxdb_v2_retention_days=2,
    )


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[InfluxDBClient]:
    client = InfluxDBClient(
        url=str(settings.influxdb_v2_url),
        token=settings.influxdb_v2_token,
        org=settings.influxdb_v2_org,
        timeout=settings.influxdb_v2_timeout_ms,
    )
    yield client
    # Clean up whatever this run created.
    buckets = client.buckets_api()
    events = settings.influxdb_v2_bucket
    for name in (events, flux.downsample_bucket(events), settings.influxdb_v2_trend_bucket):
        for bucket in buckets.find_buckets(name=name).buckets or []:
            buckets.delete_bucket(bucket)
    tasks = client.tasks_api()
    for task in tasks.find_tasks(name=flux.downsample_task_name(events)):
        tasks.delete_task(task.id)
    client.close()


@pytest.fixture(scope="module")
def store(settings: Settings, admin: InfluxDBClient) -> Iterator[InfluxStore]:
    store = InfluxStore.from_settings(settings)
    store.setup()
    yield store
    store.close()


def _bucket(admin: InfluxDBClient, name: str) -> list:
    return admin.buckets_api().find_buckets(name=name).buckets or []


def test_setup_twice_creates_everything_once(
    store: InfluxStore, settings: Settings, admin: InfluxDBClient
) -> None:
    store.setup()  # the fixture ran it once already
    events = settings.influxdb_v2_bucket
    (bucket,) = _bucket(admin, events)
    assert [r.every_seconds for r in bucket.retention_rules] == [2 * 86_400]
    assert len(_bucket(admin, flux.downsample_bucket(events))) == 1
    assert len(_bucket(admin, settings.influxdb_v2_trend_bucket)) == 1
    (task,) = admin.tasks_api().find_tasks(name=flux.downsample_task_name(events))
    assert task.every == "1h"
    assert task.flux == flux.downsample_task(events)


def test_setup_applies_a_changed_retention(settings: Settings, admin: InfluxDBClient) -> None:
    changed = settings.model_copy(update={"influxdb_v2_retention_days": 3})
    other = InfluxStore.from_settings(changed)
    try:
        other.setup()
        (bucket,) = _bucket(admin, settings.influxdb_v2_bucket)
        assert [r.every_seconds for r in bucket.retention_rules] == [3 * 86_400]
    finally:
        InfluxStore.from_settings(settings).setup()  # back to 2 days
        other.close()


def test_write_rewrite_count_read(store: InfluxStore) -> None:
    store.write(POINTS)
    store.write(POINTS)  # a redelivered batch changes nothing
    store.write(POINTS[:2])
    start, stop = BASE_NS - NS, BASE_NS + 3600 * NS
    assert store.count_per_doi(start, stop) == {DOI_A: 3, DOI_B: 2}

    read = store.read_events(DOI_A, start, stop)
    expected = sorted((p for p in POINTS if p.doi == DOI_A), key=event_timestamp_ns)
    assert [p.time_ns for p in read] == [event_timestamp_ns(p) for p in expected]
    for got, want in zip(read, expected, strict=True):
        assert got.doi == DOI_A
        assert got.fields() == want.fields()
        assert got.time_ns // NS == want.time_ns // NS  # the second is kept
    (b_first, b_second) = store.read_events(DOI_B, start, stop)
    assert (b_first.score, b_second.score) == (1.0, 2.0)
    # [start, stop) on the stored timestamps
    assert store.read_events(DOI_A, event_timestamp_ns(expected[-1]), stop)[0].score == 5.5
    assert store.read_events(DOI_A, start, event_timestamp_ns(expected[0])) == []


def test_trend_queries_match_the_reference_math(store: InfluxStore) -> None:
    store.write(POINTS)
    # DOI_A has 3 events (> 2), DOI_B has 2 (not more than min_events)
    assert store.qualifying_dois(DURATION, NOW_NS) == [DOI_A]

    dois = [DOI_B, DOI_A, DOI_NONE]
    got = store.trend_inputs(DURATION, NOW_NS, dois)
    assert isinstance(got, Aggregates)

    index = {doi: i for i, doi in enumerate(dois)}
    stamps = np.array([event_timestamp_ns(p) for p in POINTS], dtype=np.int64)

    def column(name: str) -> np.ndarray:
        return np.array([float(getattr(p, name)) for p in POINTS])

    expected = aggregate_events(
        EventColumns(
            doi_index=np.array([index[p.doi] for p in POINTS], dtype=np.int64),
            age_s=(NOW_NS - stamps) / 1e9,
            score=column("score"),
            sentiment_raw=column("sentiment_raw"),
            followers=column("followers"),
            length=column("length"),
            questions=column("questions"),
            exclamations=column("exclamations"),
            bot_rating=column("bot_rating"),
            contains_abstract_raw=column("contains_abstract_raw"),
        ),
        len(dois),
        DURATION,
    )
    for name in Aggregates.__dataclass_fields__:
        np.testing.assert_allclose(
            getattr(got, name), getattr(expected, name), rtol=1e-9, atol=1e-9, err_msg=name
        )
    assert got.series.shape == (3, DURATION.windows)
    assert got.series[index[DOI_A]].sum() == pytest.approx(35.5)


def test_trend_history_is_written(
    store: InfluxStore, settings: Settings, admin: InfluxDBClient
) -> None:
    rows = [
        {"doi": DOI_A, "score": 12.5, "count": 3, "stddev": float("nan"), "mk_trend": "no trend"},
        {"doi": DOI_B, "score": 1.0, "count": 2, "stddev": 0.0, "mk_trend": "increasing"},
    ]
    store.write_trend_history("live", NOW_NS, rows)
    store.write_trend_history("live", NOW_NS, rows)  # a rewritten run overwrites itself
    query = (
        f"from(bucket: {flux.string_literal(settings.influxdb_v2_trend_bucket)})\n"
        "    |> range(start: 0)\n"
        '    |> filter(fn: (r) => r._measurement == "trend" and r.duration == "live")\n'
        '    |> filter(fn: (r) => r._field == "score" or r._field == "count")\n'
    )
    values = {
        (r.values["doi"], r.values["_field"]): r.values["_value"]
        for r in admin.query_api().query_stream(query)
    }
    assert values == {
        (DOI_A, "score"): 12.5,
        (DOI_A, "count"): 3,
        (DOI_B, "score"): 1.0,
        (DOI_B, "count"): 2,
    }


def test_a_field_type_conflict_is_rejected_not_retried(store: InfluxStore) -> None:
    store.write(POINTS[:1])  # `score` is a float field
    with pytest.raises(StoreRejected):
        store._write_lines(  # a wrong line on purpose: integer into the float field
            store._bucket,
            [f"discussion,doi=conflict score=1i {BASE_NS}"],
        )
