"""Beat entries and beat's scheduler, built from the settings (pure; no Celery app needed).

One active beat: celery-redbeat keeps the schedule and each entry's last run in Redis under
a lock (``BEAT_LOCK_TIMEOUT_S``, extended every tick); a standby polls for the lock and
takes over within the timeout plus a poll, firing a missed cron tick still within beat's
120 s starting deadline. Trend entries expire before their next period, so a backlog never
runs a stale run.
"""

from __future__ import annotations

from typing import Any

from worker.config.settings import Settings
from worker.core import names
from worker.core.cron import min_period_s, parse_cron

#: Prefix of every key the scheduler keeps in Redis (entries, the schedule, the lock).
BEAT_KEY_PREFIX = "aggregator:beat:"
#: The lock of the active beat.
BEAT_LOCK_KEY = BEAT_KEY_PREFIX + "lock"
#: Ticks of the active beat (each extends its lock), and a standby's polls, per lock timeout.
TICKS_PER_LOCK = 5


def beat_max_interval_s(settings: Settings) -> float:
    """How long beat may sleep between two ticks, and a standby between two polls."""
    return settings.beat_lock_timeout_s / TICKS_PER_LOCK


def scheduler_config(settings: Settings) -> dict[str, Any]:
    """Celery settings of the Redis-locked scheduler (``celeryconfig`` applies them)."""
    timeout = settings.connect_timeout_s
    return {
        "beat_scheduler": "worker.celeryapp.beat_scheduler.Scheduler",
        "beat_max_loop_interval": beat_max_interval_s(settings),
        "redbeat_redis_url": settings.redis_address(),
        "redbeat_key_prefix": BEAT_KEY_PREFIX,
        "redbeat_lock_key": BEAT_LOCK_KEY,
        "redbeat_lock_timeout": settings.beat_lock_timeout_s,
        # The client's own options (not the broker's): bounded calls, and a Redis blip retried
        # for at most half the lock before beat gives up (and is restarted as a standby).
        "redbeat_redis_options": {"socket_timeout": timeout, "socket_connect_timeout": timeout,
                                  "retry_period": settings.beat_lock_timeout_s / 2},
    }


def _expires(cron: str) -> int:
    """Before the next tick (``expires`` counts from publication: room for the countdown)."""
    return max(30, min_period_s(cron) - 30)


def build_beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {}
    for duration in settings.durations().values():
        schedule[f"trends-{duration.name}"] = {
            "task": names.RUN_TREND,
            "schedule": parse_cron(duration.schedule),
            "args": (duration.name,),
            "options": {"queue": settings.trends_queue, "countdown": settings.trend_start_offset_s,
                        "expires": _expires(duration.schedule)},
        }
    # Maintenance on its own queue, never on `trends`, whose one slot it would hold. A tick
    # fired twice runs once: the task claims its cron slot (worker/maintenance/slots.py).
    schedule["maintenance"] = {
        "task": names.MAINTAIN,
        "schedule": parse_cron(settings.maintenance_schedule),
        "options": {"queue": names.MAINTENANCE_QUEUE, "expires": _expires(settings.maintenance_schedule)},
    }
    schedule["morning-post"] = {
        "task": names.MORNING_POST,
        "schedule": parse_cron(settings.post_schedule),
        "options": {"expires": 3600},
    }
    return schedule
