"""Time partitions of the two tables that grow with every event and every run (pure).

``discussion_event`` and ``trending_history`` are range-partitioned on time (PostgreSQL's
native declarative partitioning, migration 0005), so that old data leaves by dropping a
whole partition, which costs the same whatever it holds, instead of a ``DELETE`` that
touches every row, bloats the table and leaves the space to a later VACUUM.

This module only names and computes: which partition holds a time, which partitions cover
a span, what a partition is called. The DDL is :mod:`worker.db.partition_admin`; the
decisions of the maintenance task (what to drop, what to thin) are
:mod:`worker.core.retention`.

Widths
------
* events: one partition per **calendar month** (UTC). Every trend query reads the
  partitions its span overlaps, and each partition adds one index descent per DOI to a
  chunk's query: with a partition per week, the store queries of the ``year`` run took
  1.35x as long as with one per month (10M events, ``bench/year_scale.py``). A month is a
  coarse unit of retention, though: events stay up to a month longer than
  ``EVENT_RETENTION_DAYS`` (about 8% of the default 400 days).
* history: one partition per **UTC day**: thinning (every run -> hourly -> daily) works
  one day at a time, and a day's partition holds about 200,000 rows at the rates of the
  issue's measurement, a size that is rewritten in about a second.

Names are ``<table>_pYYYYMMDD`` (the first day of the range): readable, sortable, and the
maintenance task only ever touches partitions whose names it can read back, so a
partition an operator attached by hand under another name is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

NS_PER_DAY = 86_400 * 1_000_000_000
_EPOCH = date(1970, 1, 1)
_NAME = re.compile(r"^(?P<table>[a-z_]+)_p(?P<day>\d{8})$")

Unit = Literal["month", "day"]


@dataclass(frozen=True, slots=True, order=True)
class Range:
    """``[start, stop)`` in UTC; ``start`` is midnight of the first day of the unit."""

    start: datetime
    stop: datetime


@dataclass(frozen=True, slots=True)
class Layout:
    """How one parent table is cut: by which column and in which unit."""

    table: str
    column: str
    unit: Unit

    def range_of(self, at: datetime) -> Range:
        """The partition range that holds ``at`` (an aware datetime)."""
        day = at.astimezone(UTC).date()
        return self._range_starting(day.replace(day=1) if self.unit == "month" else day)

    def range_of_day(self, day: date) -> Range:
        return self._range_starting(day.replace(day=1) if self.unit == "month" else day)

    def ranges(self, start: datetime, stop: datetime) -> list[Range]:
        """The partition ranges that together cover ``[start, stop)`` (none when empty)."""
        if stop <= start:
            return []
        found = [self.range_of(start)]
        while found[-1].stop < stop:
            found.append(self._range_starting(found[-1].stop.date()))
        return found

    def ranges_of_days(self, days: Iterable[date]) -> list[Range]:
        """The distinct ranges holding these days, sorted."""
        return sorted({self.range_of_day(day) for day in days})

    def name(self, part: Range) -> str:
        return f"{self.table}_p{part.start:%Y%m%d}"

    def parse(self, name: str) -> Range | None:
        """The range a product-named partition of this table covers; ``None`` for any other name."""
        match = _NAME.match(name)
        if match is None or match["table"] != self.table:
            return None
        try:
            day = datetime.strptime(match["day"], "%Y%m%d").date()
        except ValueError:
            return None
        part = self.range_of_day(day)
        return part if part.start.date() == day else None

    def _range_starting(self, day: date) -> Range:
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        if self.unit == "day":
            return Range(start, start + timedelta(days=1))
        year, month = (day.year + 1, 1) if day.month == 12 else (day.year, day.month + 1)
        return Range(start, datetime(year, month, 1, tzinfo=UTC))


EVENTS = Layout("discussion_event", "time", "month")
HISTORY = Layout("trending_history", "calculated_at", "day")


def days_of_ns(times_ns: Iterable[int]) -> set[date]:
    """The UTC days of event times in nanoseconds (floor: also before 1970).

    Integer arithmetic per time, dates only per distinct day: a batch of 5,000 events
    costs a set of integers, not 5,000 datetimes.
    """
    return {_EPOCH + timedelta(days=d) for d in {t // NS_PER_DAY for t in times_ns}}
