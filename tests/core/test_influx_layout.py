"""The InfluxDB layout (worker/core/influx_layout.py): names, retention, and schedules that keep
every window of every duration bucket computed."""

from __future__ import annotations

from typing import Any

import pytest

from worker.config.settings import Settings
from worker.core.cron import parse_cron
from worker.core.durations import build_durations
from worker.core.influx_layout import DOWNSAMPLING, Downsampling, Layout, LayoutError, human_duration
from worker.store.influx.store import layout_from_settings

pytestmark = pytest.mark.unit

DAY_MIN = 24 * 60


def layout(**overrides: object) -> Layout:
    values: dict[str, object] = {"measurement": "trending", "events_bucket": "currently",
                                 "events_retention_days": 400, "prefix": "", "durations": build_durations()}
    values.update(overrides)
    return Layout.of(**values)  # type: ignore[arg-type]


def test_the_settings_defaults_are_ambas_names() -> None:
    amba = layout_from_settings(Settings())
    assert [amba.duration_bucket(d) for d in ("currently", "today", "week", "month", "year")] == [
        "currently", "today", "week", "month", "year"]
    assert amba.trend_bucket("week") == "trending_week"
    assert amba.numbers_bucket == "numbers"
    assert amba.measurement == "trending"


def test_the_raw_events_must_cover_the_longest_span() -> None:
    with pytest.raises(LayoutError, match=r"INFLUXDB_V2_RETENTION_DAYS=365 .* 'year' span \(365 days\).* 366"):
        layout(events_retention_days=365)
    assert layout(events_retention_days=366).events_retention_s == 366 * 86_400
    assert layout(events_retention_days=0).events_retention_s == 0  # for ever
    longer_year = build_durations('{"year": {"span_s": 400000000}}')
    with pytest.raises(LayoutError, match="'year' span"):
        layout(durations=longer_year)


def test_a_bucket_name_is_never_used_twice() -> None:
    with pytest.raises(LayoutError, match="same name"):
        layout(events_bucket="today")


def test_settings_refuse_names_influxdb_would_refuse() -> None:
    from pydantic import ValidationError

    for bad in ({"influxdb_measurement": "_reserved"}, {"influxdb_measurement": ""},
                {"influxdb_bucket_prefix": "a b"}, {"influxdb_bucket_prefix": "_x"}):
        with pytest.raises(ValidationError):
            Settings(**bad)  # type: ignore[arg-type]


def ticks_per_day(cron: str) -> list[int]:
    """Minutes of a day a cron fires (these crons do not depend on the day)."""
    schedule: Any = parse_cron(cron)  # celery-types does not declare minute/hour
    return [m for m in range(DAY_MIN) if m % 60 in schedule.minute and m // 60 in schedule.hour]


@pytest.mark.parametrize("spec", DOWNSAMPLING, ids=lambda d: d.duration)
def test_every_window_is_computed_after_it_is_complete(spec: Downsampling) -> None:
    """A window [a, a+w) is written by the first run at or after a + w whose lookback still
    reaches back to a: the longest gap between two runs must leave room for a window."""
    ticks = ticks_per_day(spec.cron)
    gaps = [b - a for a, b in zip(ticks, [*ticks[1:], ticks[0] + DAY_MIN], strict=True)]
    assert max(gaps) * 60 <= spec.lookback_s - spec.window_s
    assert spec.lookback_s % spec.window_s == 0


def test_every_task_has_a_valid_cron_and_an_offset_within_its_minute() -> None:
    for task in layout().tasks():
        assert ticks_per_day(task.cron), task.name
        assert 0 <= task.offset_s < 60, task.name


def test_human_durations() -> None:
    assert [human_duration(s) for s in (120, 1200, 7200, 86_400, 3 * 86_400, 90)] == [
        "2 min", "20 min", "2 h", "24 h", "3 d", "90 s"]
