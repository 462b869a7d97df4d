"""The self-test's checks and their lines (``worker.ops.selftest.compare`` and ``.layout``): one
line per check, the first difference naming DOI, column, the store's value and the expected one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from worker.core.durations import DEFAULT_DURATIONS, build_durations
from worker.core.influx_layout import Layout
from worker.ops.selftest.compare import (
    Check,
    aggregate_differences,
    count_differences,
    list_differences,
    row_differences,
    summary,
    verdict,
)
from worker.ops.selftest.layout import FoundBucket, FoundTask, bucket_check, flux_duration_s, task_check
from worker.ops.selftest.probe import POSTGRES_NOW_NS, build_probe
from worker.store.influx.tasks import task_flux
from worker.trends.math import compute_trends, rows

pytestmark = pytest.mark.unit

PROBE = build_probe(DEFAULT_DURATIONS, POSTGRES_NOW_NS)
TODAY = DEFAULT_DURATIONS[1]
WANT = PROBE.reference(TODAY)
DOIS = PROBE.dois
B = DOIS.index("10.0000/aggregator-selftest/busy")


def test_lines_and_summary() -> None:
    ok = Check("events stored", True, "130 events")
    failed = Check("trend inputs today", False, "10.0000/x: sum_score 7.5 != expected 8.0")
    assert ok.line() == "ok   events stored              130 events"
    assert failed.line() == "FAIL trend inputs today         10.0000/x: sum_score 7.5 != expected 8.0"
    assert summary([ok, ok]) == "selftest passed: 2 checks"
    assert summary([ok, failed, ok]) == "selftest FAILED: 1 of 3 checks"


def test_identical_aggregates_have_no_difference() -> None:
    assert aggregate_differences(DOIS, WANT, WANT) == []
    assert verdict("trend inputs today", [], "8 DOIs").ok


def test_a_wrong_sum_is_one_line_with_doi_column_got_and_expected() -> None:
    sums = WANT.sum_score.copy()
    sums[B] -= 0.5
    got = replace(WANT, sum_score=sums)
    found = aggregate_differences(DOIS, got, WANT)
    expected = float(WANT.sum_score[B])
    assert found == [f"10.0000/aggregator-selftest/busy: sum_score {expected - 0.5!r} != expected {expected!r}"]
    check = verdict("trend inputs today", found, "unused")
    assert not check.ok and check.detail == found[0]


def test_a_wrong_window_names_its_position_and_more_differences_are_counted() -> None:
    series = WANT.series.copy()
    series[B, 59] += 1.0
    series[B, 3] += 1.0
    count = WANT.count.copy()
    count[B] = 99
    found = aggregate_differences(DOIS, replace(WANT, series=series, count=count), WANT)
    assert found[0].endswith(": count 99.0 != expected " + repr(float(WANT.count[0])))
    assert f"10.0000/aggregator-selftest/busy: series[3] {float(series[B, 3])!r} != expected " \
           f"{float(WANT.series[B, 3])!r}" in found
    assert any(": series[59] " in line for line in found)
    assert verdict("x", found, "").detail.endswith("(and 2 more differences)")
    assert verdict("x", found[:2], "").detail.endswith("(and 1 more difference)")


def test_float_noise_within_the_contract_tolerance_is_no_difference() -> None:
    noisy = replace(WANT, decayed_score=WANT.decayed_score * (1 + 1e-12))
    assert aggregate_differences(DOIS, noisy, WANT) == []
    off = replace(WANT, decayed_score=WANT.decayed_score * (1 + 1e-6))
    assert aggregate_differences(DOIS, off, WANT)


def test_a_wrong_shape_is_a_difference() -> None:
    assert aggregate_differences(DOIS, replace(WANT, series=WANT.series[:, 1:]), WANT) == [
        f"series: shape {(len(DOIS), 59)} != expected {(len(DOIS), 60)}"]


def test_rows_every_column_by_doi() -> None:
    want = rows(DOIS, compute_trends(WANT, TODAY))
    assert row_differences(want, want) == []
    got = [dict(row) for row in want]
    got[B]["mk_trend"] = "decreasing"
    got[B]["count"] = 7
    del got[-1]
    found = row_differences(got, want)
    assert found[0] == f"rows: missing {DOIS[-1]}"
    assert f"10.0000/aggregator-selftest/busy: count 7 != expected {want[B]['count']}" in found
    assert f"10.0000/aggregator-selftest/busy: mk_trend 'decreasing' != expected {want[B]['mk_trend']!r}" in found


def test_lists_and_counts() -> None:
    assert list_differences("qualifying", ["a", "c"], ["a", "b"]) == ["qualifying: missing b",
                                                                     "qualifying: unexpected c"]
    assert list_differences("qualifying", ["b", "a"], ["a", "b"]) == [
        "qualifying: order ['b', 'a'] != expected ['a', 'b']"]
    assert count_differences({"a": 2, "b": 1}, {"a": 1, "c": 3}) == [
        "a: events 2 != expected 1", "b: events 1 != expected 0", "c: events 0 != expected 3"]


# --------------------------------------------------------------------------- InfluxDB's layout
LAYOUT = Layout.of(measurement="trending", events_bucket="currently", events_retention_days=400, prefix="",
                   durations=build_durations())
BUCKETS = {spec.name: spec for spec in LAYOUT.buckets()}
TASK = LAYOUT.tasks()[0]


def found_task(**changes: object) -> FoundTask:
    task = FoundTask(TASK.name, "active", TASK.cron, f"{TASK.offset_s}s", task_flux(LAYOUT, TASK), "success")
    return replace(task, **changes)  # type: ignore[arg-type]


def test_buckets() -> None:
    raw = BUCKETS["currently"]
    assert bucket_check(raw, [FoundBucket("currently", 400 * 86_400)]).line() == \
        "ok   bucket currently           retention 400 d"
    assert bucket_check(raw, []).detail == "missing (raw events (read as 'currently')): run `aggregator setup`"
    assert bucket_check(raw, [FoundBucket("currently", 30 * 86_400)]).detail == \
        "retention 30 d != expected 400 d: run `aggregator setup`"
    # A trend bucket keeps the retention an operator gave it.
    trend = BUCKETS["trending_today"]
    kept = bucket_check(trend, [FoundBucket("trending_today", 0)])
    assert kept.ok and kept.detail.startswith("retention for ever (setup would create it with ")


def test_tasks() -> None:
    flux = task_flux(LAYOUT, TASK)
    assert task_check(TASK, flux, [found_task()]).line() == \
        f"ok   task task_today            {TASK.cron} +{TASK.offset_s}s, last run succeeded"
    assert task_check(TASK, flux, [found_task(last_run_status=None)]).detail.endswith("no run yet")
    assert task_check(TASK, flux, []).detail.startswith("missing (raw events in 2 min windows into today)")
    failed = task_check(TASK, flux, [found_task(last_run_status="failed", last_run_error="bucket  not\nfound")])
    assert not failed.ok and failed.detail == "last run failed: bucket not found"
    assert task_check(TASK, flux, [found_task(status="inactive")]).detail == "status inactive != expected active"
    assert task_check(TASK, flux, [found_task(flux=flux + "// edited")]).detail == \
        "its Flux differs from setup's: run `aggregator setup`"
    assert task_check(TASK, flux, [found_task(cron="* * * * *", offset="1m")]).detail == \
        f"cron '* * * * *' != expected {TASK.cron!r} (and 1 more)"
    assert task_check(TASK, flux, [found_task(offset="50000ms")]).ok


def test_flux_durations() -> None:
    assert flux_duration_s("1m50s") == 110.0
    assert flux_duration_s("2s") == 2.0
    assert flux_duration_s(None) == flux_duration_s("") == 0.0
    assert flux_duration_s("soon") is None
    assert np.isclose(flux_duration_s("1h1ms") or 0, 3600.001)
