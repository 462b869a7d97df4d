"""Line protocol of the InfluxDB store (pure: no server, no network): the events, their
timestamps (the identity of a point) and the trend rows of ``trending_<duration>``."""

from __future__ import annotations

import math

import pytest

from tests.support.sample_points import SECOND, make_point
from worker.core.influx_layout import TREND_FIELDS
from worker.store.influx.lineprotocol import (
    UnrepresentableValue,
    escape_tag_value,
    event_timestamp_ns,
    point_line,
    trend_lines,
)
from worker.trends.math import TREND_COLUMNS

pytestmark = pytest.mark.unit

MEASUREMENT = "trending"




# --------------------------------------------------------------------------- lines


def test_point_line() -> None:
    point = make_point()
    assert point_line(point, MEASUREMENT) == (
        "trending,doi=10.1101/2021.04.01.123456 "
        "score=42.5,sentiment_raw=0.3,followers=1200i,length=180i,questions=1i,"
        "exclamations=0i,bot_rating=10.0,contains_abstract_raw=0.2,time_score=20.0,"
        "type_factor=1.0,user_score=25.1,content_score=14.0,count=1i "
        f"{event_timestamp_ns(point)}"
    )


def test_int_and_float_fields_keep_their_type_whatever_the_python_type() -> None:
    # A float field written once as an integer would be refused by InfluxDB ever after.
    line = point_line(make_point(score=42, bot_rating=3, followers=7.0, length=True), MEASUREMENT)
    fields = dict(f.split("=") for f in line.split(" ")[1].split(","))
    assert fields["score"] == "42.0"
    assert fields["bot_rating"] == "3.0"
    assert fields["followers"] == "7i"
    assert fields["length"] == "1i"
    assert fields["count"] == "1i"
    assert fields["sentiment_raw"] == "0.3"


def test_tiny_and_huge_floats_are_written_as_influx_floats() -> None:
    line = point_line(make_point(score=1e-7, user_score=1.5e300), MEASUREMENT)
    assert "score=1e-07," in line
    assert "user_score=1.5e+300," in line


@pytest.mark.parametrize(
    ("doi", "escaped"),
    [
        ("10.1000/a b", "10.1000/a\\ b"),
        ("10.1000/a,b", "10.1000/a\\,b"),
        ("10.1000/a=b", "10.1000/a\\=b"),
        ("a b,c=d e", "a\\ b\\,c\\=d\\ e"),
        ("10.1000/(x)\"y\"/é", '10.1000/(x)"y"/é'),
        ("10.1000/back\\slash", "10.1000/back\\slash"),
    ],
)
def test_tag_value_escaping(doi: str, escaped: str) -> None:
    assert escape_tag_value(doi) == escaped
    assert point_line(make_point(doi=doi), MEASUREMENT).startswith(f"trending,doi={escaped} score=")


@pytest.mark.parametrize(
    "doi", ["", "a\nb", "a\rb", "ends\\", "a\\ b", "a\\,b", "a\\=b", "a\\\\b"]
)
def test_tag_values_line_protocol_cannot_carry_are_refused(doi: str) -> None:
    with pytest.raises(UnrepresentableValue):
        escape_tag_value(doi)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_fields_are_refused(value: float) -> None:
    with pytest.raises(UnrepresentableValue):
        point_line(make_point(score=value), MEASUREMENT)


def test_int64_overflow_is_refused() -> None:
    with pytest.raises(UnrepresentableValue):
        point_line(make_point(followers=2**63), MEASUREMENT)


# --------------------------------------------------------------------------- timestamps


def test_same_event_same_timestamp() -> None:
    first = make_point(event_id="b0f2-1", time_ns=SECOND + 123_000_000)
    again = make_point(event_id="b0f2-1", time_ns=SECOND + 123_000_000, score=1.0)
    assert event_timestamp_ns(first) == event_timestamp_ns(again)
    assert point_line(first, MEASUREMENT).rsplit(" ", 1)[1] == point_line(again, MEASUREMENT).rsplit(" ", 1)[1]


def test_timestamp_is_stable_across_processes() -> None:
    # blake2b, not hash(): a pinned value catches an accidental change of the mapping.
    assert event_timestamp_ns(make_point(event_id="b0f2-1")) == SECOND + 690_321_836


def test_two_events_in_one_second_do_not_collide_and_stay_in_their_second() -> None:
    stamps = {
        event_timestamp_ns(make_point(event_id=f"ev-{i}", time_ns=SECOND + i * 1000))
        for i in range(1000)
    }
    assert len(stamps) == 1000
    assert all(SECOND <= s < SECOND + 10**9 for s in stamps)


def test_sub_second_part_is_replaced() -> None:
    a = make_point(event_id="x", time_ns=SECOND)
    b = make_point(event_id="x", time_ns=SECOND + 999_999_999)
    assert event_timestamp_ns(a) == event_timestamp_ns(b)
    before = make_point(event_id="x", time_ns=SECOND - 1)
    assert event_timestamp_ns(before) == event_timestamp_ns(a) - 10**9


# --------------------------------------------------------------------------- trend history


def test_trend_lines_use_the_original_aggregators_fields_and_types() -> None:
    row = {"doi": "10.1000/a b", "score": 1.5, "count": 12.0, "sum_followers": 1200, "mean_age": 3,
           "stddev": math.nan, "mk_trend": 'no "trend"', "mk_p": 1, "run_id": "not a field", "missing": None}
    assert trend_lines(MEASUREMENT, 1_700_000_000_000_000_000, [row]) == [
        'trending,doi=10.1000/a\\ b score=1.5,count=12i,sum_follower=1200.0,mean_age=3.0,'
        'mk_trend="no \\"trend\\"",mk_p=1.0 1700000000000000000'
    ]


def test_every_trend_column_is_written() -> None:
    row = {"publication_doi": "10.1/x", **{column: 1.0 for column in TREND_COLUMNS}, "mk_trend": "increasing"}
    (line,) = trend_lines(MEASUREMENT, 1, [row])
    written = {field.split("=")[0] for field in line.split(" ")[1].split(",")}
    assert written == {field for field, _ in TREND_FIELDS.values()}


def test_a_row_without_fields_is_left_out() -> None:
    assert trend_lines(MEASUREMENT, 1, [{"doi": "10.1/x", "stddev": math.nan}]) == []


def test_trend_lines_need_a_doi_and_numbers() -> None:
    with pytest.raises(UnrepresentableValue):
        trend_lines(MEASUREMENT, 1, [{"score": 1.0}])
    with pytest.raises(UnrepresentableValue):
        trend_lines(MEASUREMENT, 1, [{"doi": "d", "score": "1.0"}])
    with pytest.raises(UnrepresentableValue):
        trend_lines(MEASUREMENT, 1, [{"doi": "d", "count": True}])
