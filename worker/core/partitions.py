"""Time partitions of ``discussion_event`` (a month each) and ``trending_history`` (a UTC
day each), pure: which partition holds a time, which cover a span, what each is called.

Old data leaves by dropping a whole partition instead of a ``DELETE`` that bloats the
table. Months, not weeks, for events: each partition adds an index descent per DOI to a
chunk's query (weeks made the ``year`` run 1.35x slower; ``bench/year_scale.py``), at the
cost of keeping events up to a month past ``EVENT_RETENTION_DAYS``. Names are
``<table>_pYYYYMMDD``; maintenance touches only partitions whose names it can read back.
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
        return self.range_of_day(at.astimezone(UTC).date())

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
    """The UTC days of event times in nanoseconds (floor: also before 1970); dates only per
    distinct day, so a batch of 5,000 events costs a set of integers, not 5,000 datetimes."""
    return {_EPOCH + timedelta(days=d) for d in {t // NS_PER_DAY for t in times_ns}}
