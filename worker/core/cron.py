"""UTC cron expressions, parsed as Celery beat reads them (its ``crontab``), and their
shortest period: the settings, beat and ``aggregator schedule`` all read a cron the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from celery.schedules import crontab

_WEEK_MIN = 7 * 24 * 60
_YEAR_MIN = 366 * 24 * 60


def parse_cron(expr: str) -> crontab:
    """A 5-field cron (minute hour day-of-month month day-of-week); ValueError names what is wrong."""
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"cron {expr!r} must have 5 fields (minute hour day-of-month month day-of-week)")
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    return crontab(minute=minute, hour=hour, day_of_month=day_of_month,
                   month_of_year=month_of_year, day_of_week=day_of_week)


def min_period_s(expr: str) -> int:
    """Shortest gap between two ticks of a cron over a week (day-of-month/month ignored,
    which can only make the estimate shorter, i.e. the expiry safer)."""
    # celery-types does not declare crontab's parsed sets (minute, hour, day_of_week).
    cron: Any = parse_cron(expr)
    ticks = [
        m for m in range(_WEEK_MIN)
        # crontab's day_of_week: 0 = Sunday; minute index 0 here is a Monday 00:00.
        if (m % 60) in cron.minute and (m // 60) % 24 in cron.hour
        and ((m // 1440) + 1) % 7 in cron.day_of_week
    ]
    if not ticks:
        raise ValueError(f"cron {expr!r} never fires")
    gaps = [b - a for a, b in pairwise(ticks)] + [ticks[0] + _WEEK_MIN - ticks[-1]]
    return min(gaps) * 60


def latest_tick(expr: str, at: datetime) -> datetime:
    """The last tick of a cron at or before ``at`` (UTC, to the minute; within a year).

    What a task fired by beat names its *slot* with: every fire of one tick, by whichever
    beat and however late the task starts within the cron's period, finds the same slot.
    """
    cron: Any = parse_cron(expr)
    minute = at.astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(_YEAR_MIN):
        # crontab's day_of_week: 0 = Sunday; isoweekday(): Monday 1 .. Sunday 7.
        if (minute.minute in cron.minute and minute.hour in cron.hour
                and minute.isoweekday() % 7 in cron.day_of_week and minute.day in cron.day_of_month
                and minute.month in cron.month_of_year):
            return minute
        minute -= timedelta(minutes=1)
    raise ValueError(f"cron {expr!r} has no tick in the year before {at.isoformat()}")
