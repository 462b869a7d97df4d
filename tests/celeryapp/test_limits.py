"""Every task has a soft and a hard time limit from the settings, applied by celeryconfig."""

from __future__ import annotations

import pytest

from worker.celeryapp.limits import SOFT_TIME_LIMIT_RATIO, time_limits
from worker.config.settings import Settings
from worker.core import names

pytestmark = pytest.mark.unit

TASKS = {value for key, value in vars(names).items() if key.isupper() and isinstance(value, str)
         and value.startswith("tasks.")}


def test_every_task_has_a_soft_limit_below_its_hard_limit() -> None:
    limits = time_limits(Settings(task_time_limit_chunk_s=100.0, task_time_limit_maintenance_s=900.0))
    assert set(limits) == TASKS
    assert limits[names.COMPUTE_CHUNK] == {"time_limit": 100.0, "soft_time_limit": 100.0 * SOFT_TIME_LIMIT_RATIO}
    assert limits[names.MAINTAIN]["time_limit"] == 900.0
    assert all(float(v["soft_time_limit"]) < float(v["time_limit"]) for v in limits.values())


def test_celeryconfig_applies_them_and_no_per_worker_rate_limit() -> None:
    """INGEST_RATE_LIMIT is the shared bucket's (worker/ingest/write_limit.py); a Celery
    rate_limit beside it would again be per worker instance."""
    from worker.celeryapp.app import app

    annotations = app.conf.task_annotations
    assert "rate_limit" not in annotations[names.WRITE_BATCH]
    for task, limits in time_limits(Settings()).items():
        assert {k: annotations[task][k] for k in limits} == limits
    app.loader.import_default_modules()
    assert app.tasks[names.COMPUTE_CHUNK].time_limit == Settings().task_time_limit_chunk_s
    assert app.tasks[names.COMPUTE_CHUNK].soft_time_limit == Settings().task_time_limit_chunk_s * SOFT_TIME_LIMIT_RATIO
