"""Beat entries built from the settings (pure; no Celery app needed).

Each trend entry is sent with a countdown (the ~15 s stagger of the source's database jobs)
and an expiry shorter than its period: a backlog on the trends queue never runs a stale
run when a fresh one is already scheduled.
"""

from __future__ import annotations

from typing import Any

from worker.config.settings import Settings
from worker.core import names
from worker.core.cron import min_period_s, parse_cron


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {}
    for duration in settings.durations().values():
        period = min_period_s(duration.schedule)
        schedule[f"trends-{duration.name}"] = {
            "task": names.RUN_TREND,
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
        "task": names.MAINTAIN,
        "schedule": parse_cron(settings.maintenance_schedule),
        "options": {"queue": names.MAINTENANCE_QUEUE, "expires": max(30, period - 30)},
    }
    schedule["morning-post"] = {
        "task": names.MORNING_POST,
        "schedule": parse_cron(settings.post_schedule),
        "options": {"expires": 3600},
    }
    return schedule
