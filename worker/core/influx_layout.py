"""The InfluxDB layout amba's streams API reads: buckets, measurement, fields, tasks (pure).

The product replaces the original amba aggregator, which set InfluxDB up for its
neighbours; amba's streams API (``app/daos/stats.py``) reads, per trend duration:

* the bucket named after the duration (``currently``, ``today``, ``week``, ``month``,
  ``year``): measurement ``trending``, tag ``doi``, the event fields. ``currently`` holds
  the raw events; the others hold them downsampled into windows;
* ``trending_<duration>``: each trend run's rows, one point per DOI at the run's time,
  with the original aggregator's field names (``sum_follower``, not ``sum_followers``);
* ``numbers``: per duration (the measurement), totals over the duration's span.

This module says which buckets and tasks exist, with what retention, schedule and fields;
``flux_tasks.py`` writes the tasks' Flux, ``influx.py`` creates and updates all of it in
``aggregator setup``. Names are amba's by default; ``INFLUXDB_BUCKET_PREFIX`` and
``INFLUXDB_MEASUREMENT`` change them (e.g. to run a second copy beside a live system).

Decisions (README, "Living in an amba system (InfluxDB)")
-----------------------------------------------------------
* **One raw bucket.** The events bucket (``INFLUXDB_V2_BUCKET``, default ``currently``)
  is what the API reads as ``currently``. Its retention (``INFLUXDB_V2_RETENTION_DAYS``)
  must cover the longest trend span, because every trend run, ``year`` included, reads raw
  events: exact trends need them (the original kept 7 hours and computed the longer
  durations from downsampled buckets).
* **Downsampled from the raw events, not a cascade.** Each duration bucket is filled by a
  task reading the raw bucket (windows as the original's: 2 min, 20 min, 2 h, 24 h), so an
  error in one bucket never propagates to the next. Every run recomputes its last
  ``lookback`` of complete windows: events that reach InfluxDB late (an ingest backlog
  after an outage) land in their window; rewriting a window writes the same points.
* **Numbers from the raw events**, over each duration's span: sums of ``score``,
  ``followers``, ``count``, means of the other fields (exact: sum / count, computed from
  per-DOI sums the storage engine aggregates), ``pub_count`` = DOIs with events.
* **Field types are the original aggregator's**, so a bucket it filled keeps accepting
  writes (InfluxDB refuses a float into an integer field): downsampled and numbers fields
  are floats; in ``trending_<duration>`` ``count`` is an integer, the rest floats.
* **Retention**: duration buckets keep their span plus an hour and ``numbers`` seven days
  (the original's, enforced: the product can recompute them); ``trending_<duration>`` is
  created with its span plus a day (the API reads one span back; PostgreSQL's
  ``trending_history`` is the long-term record), and an existing one keeps the retention
  an operator gave it, since its points cannot be recomputed.
* **Task names are the original's** (``task_<bucket>``, ``task_numbers_<duration>``), so
  setup on an InfluxDB the original aggregator set up takes its tasks over and rewrites
  them in place instead of running beside them. Its ``task_history`` (the ``year`` bucket
  downsampled into ``history``) is not the product's and is left alone.
* **Schedules** avoid the trend runs and each other (see :data:`DOWNSAMPLING`);
  ``aggregator schedule`` draws the day (the seed's Figure 1) with the measured lengths of
  the runs and flags the overlaps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

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


#: The windows are the original aggregator's ``downsample_window`` of each bucket.
#: The schedules: within a minute, a trend run starts at +15 s (TREND_START_OFFSET_S) and
#: usually ends well before +45 s; `task_numbers_currently` runs every minute at +2 s;
#: every other task at +50 s, each in minutes of its own (≡ 2, 4 and 5 mod 6) in which no
#: trend run starts (the trend crons fire at minutes ≡ 0 mod 3, ≡ 1 mod 10, 4, 5 and 25).
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
#: aggregator's names and types, and the product's Mann-Kendall columns.
TREND_FIELDS: dict[str, tuple[str, FieldKind]] = {
    "score": ("score", "float"),
    "count": ("count", "int"),
    "mean_sentiment": ("mean_sentiment", "float"),
    "sum_followers": ("sum_follower", "float"),
    "abstract_difference": ("abstract_difference", "float"),
    "mean_age": ("mean_age", "float"),
    "mean_length": ("mean_length", "float"),
    "mean_questions": ("mean_questions", "float"),
    "mean_exclamations": ("mean_exclamations", "float"),
    "mean_bot_rating": ("mean_bot_rating", "float"),
    "mean_score": ("mean_score", "float"),
    "stddev": ("stddev", "float"),
    "ema": ("ema", "float"),
    "kama": ("kama", "float"),
    "ker": ("ker", "float"),
    "projected_change": ("projected_change", "float"),
    "trending": ("trending", "float"),
    "mk_trend": ("mk_trend", "string"),
    "mk_p": ("mk_p", "float"),
}

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
    enforce_retention: bool  # setup corrects an existing bucket's retention to this
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

    # -- names ----------------------------------------------------------------------------

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

    # -- what setup creates ---------------------------------------------------------------

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
