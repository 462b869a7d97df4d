"""The Celery application: ``celery -A worker.app worker -Q ingest`` and friends."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from worker.celeryapp import (
    liveness,  # noqa: F401 - connects the worker's heartbeat and the dead workers' restore
    metrics,  # also connects the worker's metrics endpoint to worker_init
    recovery,  # noqa: F401 - connects the lease recovery to worker_ready
    stalls,  # noqa: F401 - ends a task's PostgreSQL wait at its soft time limit
)
from worker.celeryapp.kombu_guard import guard_full_redis, guard_lost_connection
from worker.config.logs import make_formatter
from worker.config.settings import get_settings
from worker.core.names import TASK_MODULES

guard_full_redis()  # a full Redis must not end the worker (see worker/celeryapp/kombu_guard.py)
guard_lost_connection()  # nor a Redis restart (same module)
metrics.prepare_directory(os.environ)  # before the task modules define their metrics
app = Celery("aggregator", include=list(TASK_MODULES))
app.config_from_object("celeryconfig")


@after_setup_logger.connect
@after_setup_task_logger.connect
def _format_logs(logger: object, **_: object) -> None:
    """Celery's own log lines in the product's format (LOG_FORMAT), not Celery's default."""
    formatter = make_formatter(get_settings().log_format)
    for handler in getattr(logger, "handlers", []):
        handler.setFormatter(formatter)
