"""What the maintenance task does at a given time: retention and history thinning (pure;
:mod:`worker.maintenance.run` carries out the :func:`plan`). A partition or day moves on only
once all of it is older than its threshold, so everything is kept at least as long and as
finely as the policy says (docs/operating.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum

from worker.core.partitions import EVENTS, HISTORY, Range

DAY = timedelta(days=1)
#: Event partitions created ahead of time: this month and the next (the write path also
#: creates any it meets, so this only spares the first batch of a month the DDL).
EVENTS_AHEAD = timedelta(days=32)
#: History partitions created ahead: today and the next two days.
HISTORY_AHEAD = timedelta(days=2)


class Level(IntEnum):
    """A history day's resolution; a larger value is thinner. "The last row" is the latest
    calculation: a chart keeps the value at the end of each hour or day."""

    FULL = 0  # every run
    HOURLY = 1  # per (DOI, duration): the last row of each hour
    DAILY = 2  # per (DOI, duration): the last row of the day

    @property
    def bucket(self) -> str:
        """The ``date_trunc`` unit of the buckets this level keeps one row of."""
        return {Level.HOURLY: "hour", Level.DAILY: "day"}[self]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Retention and thinning, in days (settings validate them; see :meth:`problems`)."""

    event_retention_days: int
    history_full_days: int
    history_hourly_days: int
    history_retention_days: int

    def problems(self, longest_span_s: int) -> list[str]:
        """What is wrong with this policy, as lines naming the variables (empty: fine)."""
        found = []
        margin_needed = longest_span_s + DAY.total_seconds()
        if self.event_retention_days * DAY.total_seconds() < margin_needed:
            found.append(f"EVENT_RETENTION_DAYS ({self.event_retention_days}) must cover the longest trend span "
                         f"({longest_span_s / 86400:g} days) plus a day")
        if not 1 <= self.history_full_days <= self.history_hourly_days <= self.history_retention_days:
            found.append(f"TREND_HISTORY_FULL_DAYS ({self.history_full_days}) <= TREND_HISTORY_HOURLY_DAYS "
                         f"({self.history_hourly_days}) <= TREND_HISTORY_RETENTION_DAYS "
                         f"({self.history_retention_days}) must hold, from 1 day")
        return found

    def event_cutoff(self, now: datetime) -> datetime:
        """Events before this time may go."""
        return now - self.event_retention_days * DAY

    def history_level(self, day: Range, now: datetime) -> Level | None:
        """The resolution a history day should have at ``now``; ``None``: drop it."""
        if day.stop <= now - self.history_retention_days * DAY:
            return None
        if day.stop <= now - self.history_hourly_days * DAY:
            return Level.DAILY
        if day.stop <= now - self.history_full_days * DAY:
            return Level.HOURLY
        return Level.FULL


@dataclass(frozen=True, slots=True)
class HistoryDay:
    """A history partition as it is: its range and the level it was thinned to."""

    range: Range
    level: Level = Level.FULL


@dataclass(frozen=True, slots=True)
class Plan:
    create_events: list[Range] = field(default_factory=list)
    drop_events: list[Range] = field(default_factory=list)
    create_history: list[Range] = field(default_factory=list)
    thin_history: list[tuple[Range, Level]] = field(default_factory=list)  # oldest first
    drop_history: list[Range] = field(default_factory=list)


def plan(policy: RetentionPolicy, now: datetime, events: Sequence[Range], history: Sequence[HistoryDay]) -> Plan:
    """What to do at ``now`` given the event partitions and history days that exist."""
    cutoff = policy.event_cutoff(now)
    existing_events = set(events)
    ahead_events = [r for r in EVENTS.ranges(now, now + EVENTS_AHEAD) if r not in existing_events]
    existing_days = {day.range for day in history}
    ahead_days = [r for r in HISTORY.ranges(now, now + HISTORY_AHEAD) if r not in existing_days]
    thin: list[tuple[Range, Level]] = []
    drop_days: list[Range] = []
    for day in sorted(history, key=lambda d: d.range):
        target = policy.history_level(day.range, now)
        if target is None:
            drop_days.append(day.range)
        elif target > day.level:
            thin.append((day.range, target))
    return Plan(
        create_events=ahead_events,
        drop_events=sorted(r for r in existing_events if r.stop <= cutoff),
        create_history=ahead_days,
        thin_history=thin,
        drop_history=drop_days,
    )
