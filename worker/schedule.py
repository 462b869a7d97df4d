"""Beat entries built from the durations table (pure; no Celery app needed).

Each trend entry is sent with a countdown (the ~15 s stagger of the source's database jobs)
and an expiry shorter than its period: a backlog on the trends queue never runs a stale
run when a fresh one is already scheduled.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from celery.schedules import crontab

from worker.durations import build_durations
from worker.settings import Settings

_WEEK_MIN = 7 * 24 * 60
#: The queue of the maintenance task (``celeryconfig`` declares it; worker-default serves it).
MAINTENANCE_QUEUE = "maintenance"


def parse_cron(expr: str) -> crontab:
    minute, hour, day_of_month, month_of_year, day_of_week = expr.split()
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


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {}
    for duration in build_durations(settings.trend_durations).values():
        period = min_period_s(duration.schedule)
        schedule[f"trends-{duration.name}"] = {
            "task": "tasks.trends.run_trend",
            "schedule": parse_cron(duration.schedule),
            "args": (duration.name,),
            "options": {
                "queue": settings.trends_queue,
                "countdown": settings.trend_start_offset_s,
                # expires counts from publication; leave room for the countdown.
                "expires": max(30, period - 30),
            },
        }
    # Maintenance (partitions, retention, thinning) on its own queue, served beside the
    # morning post by the default worker: never on `trends`, whose one slot it would hold.
    period = min_period_s(settings.maintenance_schedule)
    schedule["maintenance"] = {
        "task": "tasks.maintenance.maintain",
        "schedule": parse_cron(settings.maintenance_schedule),
        "options": {"queue": MAINTENANCE_QUEUE, "expires": max(30, period - 30)},
    }
    schedule["morning-post"] = {
        "task": "tasks.post.morning_post",
        "schedule": parse_cron(settings.post_schedule),
        "options": {"expires": 3600},
    }
    return schedule
