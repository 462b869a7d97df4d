"""The InfluxDB layout amba's streams API reads: buckets, measurement, fields, tasks (pure;
docs/amba.md lists them and says why). Field types are the original aggregator's, so a
bucket it filled keeps accepting writes (InfluxDB refuses a float into an integer field).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from worker.core.aggregates import TREND_COLUMNS
from worker.core.durations import Duration

#: The duration the streams API reads from the raw event bucket.
RAW_DURATION = "currently"

_H = 3600
_D = 86_400


@dataclass(frozen=True, slots=True)
class Downsampling:
    """How one duration bucket is filled from the raw events."""

    duration: str
    window_s: int
    cron: str
    offset_s: int
    lookback_s: int  # complete windows recomputed by every run


@dataclass(frozen=True, slots=True)
class NumbersSchedule:
    duration: str
    cron: str
    offset_s: int


#: The original aggregator's windows. The trend crons fire at minutes ≡ 0 mod 3, ≡ 1 mod 10,
#: 4, 5 and 25 (+15 s, usually done by +45 s): the tasks run at +50 s in other minutes.
DOWNSAMPLING: tuple[Downsampling, ...] = (
    Downsampling("today", 2 * 60, "2-59/6 * * * *", 50, 1 * _H),
    Downsampling("week", 20 * 60, "17 * * * *", 50, 3 * _H),
    Downsampling("month", 2 * _H, "35 */2 * * *", 50, 12 * _H),
    Downsampling("year", 24 * _H, "47 0 * * *", 50, 3 * _D),
)

NUMBERS: tuple[NumbersSchedule, ...] = (
    NumbersSchedule("currently", "* * * * *", 2),
    NumbersSchedule("today", "10-59/6 * * * *", 50),  # not minute 4: the year run starts at 02:04
    NumbersSchedule("week", "23 * * * *", 50),
    NumbersSchedule("month", "29 */3 * * *", 50),
    NumbersSchedule("year", "53 4 * * *", 50),
)

#: Event fields of the downsampled buckets and ``numbers``, and how they are combined.
SUM_FIELDS: tuple[str, ...] = ("score", "followers", "count")
MEAN_FIELDS: tuple[str, ...] = ("sentiment_raw", "contains_abstract_raw", "questions", "exclamations", "length",
                                "bot_rating")
PUB_COUNT_FIELD = "pub_count"

FieldKind = Literal["float", "int", "string"]

#: Trend row column -> (field of ``trending_<duration>``, its type): the original
#: aggregator's names and types (floats but these two), and the product's Mann-Kendall columns.
_RENAMED_FIELDS = {"sum_followers": "sum_follower"}
_FIELD_KINDS: dict[str, FieldKind] = {"count": "int", "mk_trend": "string"}
TREND_FIELDS: dict[str, tuple[str, FieldKind]] = {
    column: (_RENAMED_FIELDS.get(column, column), _FIELD_KINDS.get(column, "float")) for column in TREND_COLUMNS}

DURATION_BUCKET_MARGIN_S = 1 * _H
TREND_BUCKET_MARGIN_S = 1 * _D
NUMBERS_RETENTION_S = 7 * _D
#: The raw events must outlive the longest span by this much (shard groups expire whole).
RAW_RETENTION_MARGIN_S = 1 * _D


def human_duration(seconds: int) -> str:
    """``120`` -> ``2 min``, ``7200`` -> ``2 h``, ``86400`` -> ``24 h``, ``259200`` -> ``3 d``."""
    if seconds % _D == 0 and seconds > _D:
        return f"{seconds // _D} d"
    if seconds % _H == 0:
        return f"{seconds // _H} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


class LayoutError(ValueError):
    """The configured layout cannot serve the trends or the streams API."""


@dataclass(frozen=True, slots=True)
class BucketSpec:
    name: str
    retention_s: int  # 0 = for ever
    # Setup corrects an existing bucket's retention to this; not a trend bucket's, whose
    # points cannot be recomputed.
    enforce_retention: bool
    holds: str


@dataclass(frozen=True, slots=True)
class TaskSpec:
    name: str
    cron: str
    offset_s: int
    writes: str
    description: str
    kind: Literal["downsample", "numbers"]
    duration: str


@dataclass(frozen=True, slots=True)
class Layout:
    """Names and schedules of everything the product keeps in InfluxDB."""

    measurement: str
    events_bucket: str
    events_retention_s: int
    prefix: str
    durations: Mapping[str, Duration]

    def __post_init__(self) -> None:
        missing = {RAW_DURATION} | {d.duration for d in DOWNSAMPLING} | {n.duration for n in NUMBERS}
        missing -= set(self.durations)
        if missing:
            raise LayoutError(f"the InfluxDB layout needs the durations {sorted(missing)}")
        longest = max(self.durations.values(), key=lambda d: d.span_s)
        needed = longest.span_s + RAW_RETENTION_MARGIN_S
        if self.events_retention_s and self.events_retention_s < needed:
            raise LayoutError(
                f"INFLUXDB_V2_RETENTION_DAYS={self.events_retention_s / _D:g} keeps the raw events shorter than "
                f"the {longest.name!r} span ({longest.span_s / _D:g} days) plus a day: its trends read raw "
                f"events that far back; use at least {-(-needed // _D)} (or 0 = for ever)"
            )
        names = [b.name for b in self.buckets()]
        if len(set(names)) != len(names):
            raise LayoutError(f"two InfluxDB buckets would have the same name: {sorted(names)}")

    @classmethod
    def of(cls, *, measurement: str, events_bucket: str, events_retention_days: int, prefix: str,
           durations: Mapping[str, Duration]) -> Layout:
        return cls(measurement, events_bucket, events_retention_days * _D, prefix, dict(durations))

    def duration_bucket(self, duration: str) -> str:
        """The bucket the streams API reads for a duration."""
        return self.events_bucket if duration == RAW_DURATION else f"{self.prefix}{duration}"

    def trend_bucket(self, duration: str) -> str:
        return f"{self.prefix}trending_{duration}"

    @property
    def numbers_bucket(self) -> str:
        return f"{self.prefix}numbers"

    def downsample_task_name(self, duration: str) -> str:
        return f"{self.prefix}task_{duration}"

    def numbers_task_name(self, duration: str) -> str:
        return f"{self.prefix}task_numbers_{duration}"

    def buckets(self) -> list[BucketSpec]:
        spans = {name: d.span_s for name, d in self.durations.items()}
        found = [BucketSpec(self.events_bucket, self.events_retention_s, True,
                            f"raw events (read as {RAW_DURATION!r})")]
        found += [
            BucketSpec(self.duration_bucket(d.duration), spans[d.duration] + DURATION_BUCKET_MARGIN_S, True,
                       f"events in {human_duration(d.window_s)} windows")
            for d in DOWNSAMPLING
        ]
        found.append(BucketSpec(self.numbers_bucket, NUMBERS_RETENTION_S, True, "totals per duration"))
        found += [
            BucketSpec(self.trend_bucket(name), span + TREND_BUCKET_MARGIN_S, False, f"rows of each {name} run")
            for name, span in spans.items()
        ]
        return found

    def tasks(self) -> list[TaskSpec]:
        found = [
            TaskSpec(self.downsample_task_name(d.duration), d.cron, d.offset_s, self.duration_bucket(d.duration),
                     f"raw events in {human_duration(d.window_s)} windows into {self.duration_bucket(d.duration)}",
                     "downsample", d.duration)
            for d in DOWNSAMPLING
        ]
        found += [
            TaskSpec(self.numbers_task_name(n.duration), n.cron, n.offset_s, self.numbers_bucket,
                     f"totals of the last {n.duration} into {self.numbers_bucket}", "numbers", n.duration)
            for n in NUMBERS
        ]
        return found

    def downsampling(self, duration: str) -> Downsampling:
        return next(d for d in DOWNSAMPLING if d.duration == duration)
