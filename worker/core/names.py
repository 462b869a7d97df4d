"""The names other processes address: Celery task names and the fixed queue names.

Defined once, as a typo in one is a message no worker ever takes; queued messages and
Flower's history carry them, so never rename one. The ingest and trends queues are
settings (``INGEST_QUEUE``, ``TRENDS_QUEUE``).
"""

from __future__ import annotations

# -- tasks (the modules of the top-level ``tasks`` package declare them) ----------------------
WRITE_BATCH = "tasks.ingest.write_batch"
RUN_TREND = "tasks.trends.run_trend"
COMPUTE_CHUNK = "tasks.trends.compute_chunk"
FINALIZE_TREND = "tasks.trends.finalize_trend"
TREND_FAILED = "tasks.trends.trend_failed"
RECORD_RUN_FAILURE = "tasks.trends.record_run_failure"
MORNING_POST = "tasks.post.morning_post"
MAINTAIN = "tasks.maintenance.maintain"

#: The task modules the Celery app loads.
TASK_MODULES = ("tasks.ingest", "tasks.trends", "tasks.post", "tasks.maintenance")

# -- queues ---------------------------------------------------------------------------------
#: Celery's default queue: the morning post (and anything unrouted), served by worker-default.
DEFAULT_QUEUE = "celery"
#: The maintenance task's queue, served by worker-default beside the post, never by `trends`.
MAINTENANCE_QUEUE = "maintenance"
