"""Celery time limits per task kind, from the settings (pure; ``celeryconfig`` applies them).

The soft limit raises ``SoftTimeLimitExceeded`` inside the task before the hard one kills
its pool process, so a chunk fails its run through its errback and an ingest batch is
retried (:mod:`worker.celeryapp.stalls` ends a PostgreSQL wait). A hung task costs its
limit, not a worker.
"""

from __future__ import annotations

from worker.config.settings import Settings
from worker.core import names

#: The soft limit as a fraction of the hard one: room for the task to fail cleanly.
SOFT_TIME_LIMIT_RATIO = 0.8


def time_limits(settings: Settings) -> dict[str, dict[str, float | str]]:
    """Task name -> ``{"time_limit": hard, "soft_time_limit": soft}``, seconds."""
    hard = {
        names.WRITE_BATCH: settings.task_time_limit_ingest_s,
        names.RUN_TREND: settings.task_time_limit_trend_run_s,
        names.COMPUTE_CHUNK: settings.task_time_limit_chunk_s,
        names.FINALIZE_TREND: settings.task_time_limit_finalize_s,
        names.TREND_FAILED: settings.task_time_limit_finalize_s,
        names.RECORD_RUN_FAILURE: settings.task_time_limit_finalize_s,
        names.MAINTAIN: settings.task_time_limit_maintenance_s,
        names.MORNING_POST: settings.task_time_limit_post_s,
    }
    return {task: {"time_limit": limit, "soft_time_limit": round(limit * SOFT_TIME_LIMIT_RATIO, 3)}
            for task, limit in hard.items()}  # a task's other annotations (rate_limit) join these
