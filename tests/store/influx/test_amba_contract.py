"""What the product writes to InfluxDB against what amba's streams API reads from it.

The reads are data in ``tests/support/amba_streams_api.py`` (source named there); the writes are
the product's own pure code: the line protocol of the events and of the trend rows, and
the Flux of the tasks that fill the duration buckets and ``numbers``. No server needed;
``tests/store/influx/test_live.py`` runs the API's queries against a real one.
"""

from __future__ import annotations

import re

import pytest

from tests.support import amba_streams_api as api
from worker.config.settings import Settings
from worker.core.events import Point
from worker.core.influx_layout import RAW_DURATION, TaskSpec
from worker.store.influx.lineprotocol import point_line, trend_lines
from worker.store.influx.store import layout_from_settings
from worker.store.influx.tasks import task_flux
from worker.trends.math import TREND_COLUMNS

pytestmark = pytest.mark.contract

LAYOUT = layout_from_settings(Settings())  # the defaults are amba's names


def line_parts(line: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """(measurement, tags, fields) of a line without escaped characters."""
    series, fields, _time = line.split(" ")
    measurement, *tags = series.split(",")
    return (measurement, dict(t.split("=", 1) for t in tags), dict(f.split("=", 1) for f in fields.split(",")))


def task(kind: str, duration: str) -> TaskSpec:
    return next(t for t in LAYOUT.tasks() if t.kind == kind and t.duration == duration)


def test_every_bucket_the_api_reads_is_set_up() -> None:
    names = {b.name for b in LAYOUT.buckets()}
    assert {*api.DURATIONS, *map(api.trend_bucket, api.DURATIONS), api.NUMBERS_BUCKET} <= names
    assert {d: LAYOUT.duration_bucket(d) for d in api.DURATIONS} == {d: d for d in api.DURATIONS}


def test_raw_events_are_what_the_api_reads_as_currently() -> None:
    point = Point("e", "10.1101/x", 1_700_000_000 * 10**9, 1.5, 0.1, 10, 100, 1, 0, 2.0, 0.5, 1.0, 1.0, 1.0, 1.0)
    measurement, tags, fields = line_parts(point_line(point, LAYOUT.measurement))
    assert (LAYOUT.duration_bucket(RAW_DURATION), measurement, set(tags)) == ("currently", api.MEASUREMENT, {"doi"})
    assert set(fields) >= api.DURATION_BUCKET_FIELDS


@pytest.mark.parametrize("duration", [d for d in api.DURATIONS if d != RAW_DURATION])
def test_each_duration_bucket_is_filled_with_the_api_fields(duration: str) -> None:
    text = task_flux(LAYOUT, task("downsample", duration))
    assert f'to(bucket: "{duration}")' in text
    # the measurement and the doi tag pass through from the raw events (aggregateWindow per series)
    assert f'r._measurement == "{api.MEASUREMENT}"' in text
    assert set(re.findall(r'r\._field == "(\w+)"', text)) >= api.DURATION_BUCKET_FIELDS
    assert "float(v: r._value)" in text  # the original's field types: floats


@pytest.mark.parametrize("duration", api.DURATIONS)
def test_numbers_are_written_per_duration_with_the_api_fields(duration: str) -> None:
    text = task_flux(LAYOUT, task("numbers", duration))
    assert f'experimental.to(bucket: "{api.NUMBERS_BUCKET}")' in text
    assert f'_measurement: "{duration}"' in text
    written = set(re.findall(r"^        (\w+): ", text, re.MULTILINE)) - {"_time", "_measurement"}
    assert written == api.NUMBERS_FIELDS


def test_trend_rows_are_what_the_api_charts() -> None:
    row = {"doi": "10.1101/x", **dict.fromkeys(TREND_COLUMNS, 1.0), "mk_trend": "no trend"}
    (line,) = trend_lines(LAYOUT.measurement, 1_700_000_000 * 10**9, [row])
    measurement, tags, fields = line_parts(line.replace('"no trend"', '"no-trend"'))
    assert (measurement, set(tags)) == (api.MEASUREMENT, {"doi"})
    assert set(fields) >= api.TREND_BUCKET_FIELDS
    assert fields["count"].endswith("i") and fields["sum_follower"] == "1.0"  # the original's types
    assert {d: LAYOUT.trend_bucket(d) for d in api.DURATIONS} == {d: api.trend_bucket(d) for d in api.DURATIONS}


def test_the_api_reads_the_live_tests_run_compile() -> None:
    """The live tests send the API's Flux reads (``amba_streams_api.flux_reads``)."""
    from tests.support.flux_compiler import check_flux

    sources = [text for d in api.DURATIONS for text in api.flux_reads(d, "10.1101/x").values()]
    results = check_flux(sources)
    assert all(r.valid for r in results), [r.errors for r in results if not r.valid]
