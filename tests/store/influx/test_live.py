"""InfluxStore against a real InfluxDB 2 (``INFLUXDB_V2_URL``, ``_TOKEN``, ``_ORG``): amba's
layout and tasks as setup creates them, and the streams API's reads of what the product writes.

Skipped where no server runs (``tests/support/influx_live.py`` says how to start one). Every
expectation is computed from the events as written (their own timestamps), never from
what the server stores; the store contracts (``-m contract``) run here too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient

from tests.support import amba_streams_api as api
from tests.support.devstack.services import wait_until
from tests.support.event_columns import aggregate_points
from tests.support.influx_live import admin_client, live_settings, live_store, needs_influx
from tests.support.sample_points import measured
from tests.support.stored_events import influx_events
from worker.config.settings import Settings
from worker.core.durations import Duration
from worker.core.events import Point
from worker.store.base import Aggregates, StoreRejected
from worker.store.influx.lineprotocol import event_timestamp_ns
from worker.store.influx.store import InfluxStore
from worker.store.influx.tasks import task_flux

pytestmark = [pytest.mark.integration, pytest.mark.influx_live, needs_influx]

NS = 1_000_000_000
DOI_A = "10.1101/2021.04.01.123456"
DOI_B = '10.1000/a b,c=d(é)"$x'  # escaping in line protocol, in strings and in the regex
DOI_NONE = "10.9999/no-events"
# Twenty minutes ago, on a whole second: inside every range the API and the tasks read.
NOW_NS = (time.time_ns() // NS - 1200) * NS
LIVE = Duration("currently", 6 * 3600, -0.00036, 360, 60, 2, "*/3 * * * *")  # `currently`, min_events 2


def point(event_id: str, doi: str, seconds_back: float, score: float) -> Point:
    return Point(event_id=event_id, doi=doi, time_ns=NOW_NS - int(seconds_back * NS), score=score,
                 sentiment_raw=0.25, followers=100 + len(event_id), length=180, questions=1, exclamations=2,
                 bot_rating=10.0, contains_abstract_raw=0.5, time_score=20.0, type_factor=1.0, user_score=25.1,
                 content_score=14.0)


POINTS = [
    point("a-1", DOI_A, 800.9, 10.0),
    point("a-2", DOI_A, 800.2, 20.0),  # same second as a-1: both must count
    point("a-3", DOI_A, 360.0, 5.5),  # on a window edge (age = one window)
    point("a-4", DOI_A, 358.1, 1.5),  # the second after it (age 359): the next window
    point("b-1", DOI_B, 30.0, 1.0),
    point("b-2", DOI_B, -0.5, 2.0),  # in now's own second, after now: in (whole seconds)
]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return live_settings(retention_days=400)


@pytest.fixture(scope="module")
def store(settings: Settings) -> Iterator[InfluxStore]:
    with live_store(settings) as influx:
        influx.write(POINTS)
        yield influx


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[InfluxDBClient]:
    client = admin_client(settings)
    yield client
    client.close()


def reads(store: InfluxStore, duration: str) -> dict[str, str]:
    """The streams API's reads of DOI_A, on this test's (prefixed) bucket names."""
    layout = store.layout
    return api.flux_reads(duration, DOI_A, duration_bucket=layout.duration_bucket(duration),
                          trends_bucket=layout.trend_bucket(duration), numbers_bucket=layout.numbers_bucket)


def query(admin: InfluxDBClient, source: str) -> list[dict[str, Any]]:
    return [record.values for record in admin.query_api().query_stream(source)]


def test_setup_creates_the_layout_once_and_leaves_it_alone_the_second_time(
    store: InfluxStore, admin: InfluxDBClient
) -> None:
    store.setup()  # the fixture ran it once already
    for spec in store.layout.buckets():
        (bucket,) = admin.buckets_api().find_buckets(name=spec.name).buckets
        assert sum(r.every_seconds or 0 for r in bucket.retention_rules or [] if r.type == "expire") \
            == spec.retention_s
    for task_spec in store.layout.tasks():
        (task,) = admin.tasks_api().find_tasks(name=task_spec.name)
        assert (task.cron, task.offset, task.flux) == (task_spec.cron, f"{task_spec.offset_s}s",
                                                       task_flux(store.layout, task_spec))


def test_write_rewrite_count_read(store: InfluxStore, admin: InfluxDBClient) -> None:
    store.write(POINTS)  # a redelivered batch changes nothing
    store.write(POINTS[:2])
    start, stop = NOW_NS - 3600 * NS, NOW_NS + 60 * NS
    assert store.count_per_doi(start, stop) == {DOI_A: 4, DOI_B: 2}
    read = influx_events(admin, store.layout, DOI_A, start, stop)
    expected = sorted((p for p in POINTS if p.doi == DOI_A), key=event_timestamp_ns)
    assert [p.time_ns for p in read] == [event_timestamp_ns(p) for p in expected]
    for got, want in zip(read, expected, strict=True):
        assert measured(got) == measured(want)
        assert got.time_ns // NS == want.time_ns // NS  # the second is kept


def test_trend_inputs_equal_the_math_on_the_events(store: InfluxStore) -> None:
    assert store.qualifying_dois(LIVE, NOW_NS) == [DOI_A]  # B has 2 events: not MORE than 2
    dois = [DOI_B, DOI_A, DOI_NONE]
    got = store.trend_inputs(LIVE, NOW_NS, dois)
    index = {doi: i for i, doi in enumerate(dois)}
    expected = aggregate_points(POINTS, dois, NOW_NS, LIVE)  # at the events' own times
    for name in Aggregates.__dataclass_fields__:
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-9, atol=1e-9, err_msg=name)
    a = got.series[index[DOI_A]]
    assert (a[-2], a[-1]) == (5.5, 1.5)  # the edge event and the one a second later, apart
    assert got.series[index[DOI_B]][-1] == 3.0


def test_trend_rows_are_what_the_streams_api_charts(store: InfluxStore, admin: InfluxDBClient) -> None:
    rows = [{"doi": DOI_A, "score": 12.5, "count": 4, "sum_followers": 416, "stddev": float("nan"),
             "mk_trend": "no trend"}]
    store.write_trend_history("currently", NOW_NS, rows)
    store.write_trend_history("currently", NOW_NS, rows)  # a rewritten run overwrites itself
    source = reads(store, "currently")["get_trending_chart_data"]
    assert [(r["doi"], r["_value"]) for r in query(admin, source)] == [(DOI_A, 416.0)]


def test_the_streams_api_reads_raw_events_as_currently(store: InfluxStore, admin: InfluxDBClient) -> None:
    source = reads(store, "currently")["get_number_influx"]
    assert [r["_value"] for r in query(admin, source)] == [37.0]


def run_task_now(admin: InfluxDBClient, name: str, timeout_s: float = 60.0) -> None:
    """Run a task once, scheduled at the current time, and wait for its run to end."""
    tasks = admin.tasks_api()
    (task,) = tasks.find_tasks(name=name)
    run = tasks.run_manually(task.id)
    # The server offers no notification of a finished run: poll it as every wait here does.
    wait_until(lambda: tasks.get_run(task.id, run.id).status in ("success", "failed", "canceled"), timeout_s,
               f"a run of task {name}")
    state = tasks.get_run(task.id, run.id)
    assert state.status == "success", [e.message for e in tasks.get_run_logs(task.id, run.id)]


def test_the_tasks_fill_the_buckets_the_streams_api_reads(store: InfluxStore, admin: InfluxDBClient) -> None:
    layout = store.layout
    run_task_now(admin, layout.downsample_task_name("today"))
    run_task_now(admin, layout.numbers_task_name("currently"))
    # Windows of 2 minutes ending within the last hour: all four events of A.
    assert [r["_value"] for r in query(admin, reads(store, "today")["get_number_influx"])] == [37.0]
    numbers = query(admin, reads(store, "currently")["get_task_number_influx"])
    assert [r["_value"] for r in numbers] == [2.0]  # two DOIs with events


def test_a_field_type_conflict_is_rejected_not_retried(store: InfluxStore) -> None:
    with pytest.raises(StoreRejected):
        store._write_lines(  # a wrong line on purpose: integer into the float field `score`
            store.layout.events_bucket, [f"{store.layout.measurement},doi=conflict score=1i {NOW_NS}"])


def test_a_task_run_shows_in_the_measured_durations(store: InfluxStore, admin: InfluxDBClient) -> None:
    run_task_now(admin, store.layout.numbers_task_name("today"))
    measured = store.task_run_seconds(datetime.now(UTC) - timedelta(hours=1))
    assert measured[store.layout.numbers_task_name("today")]
