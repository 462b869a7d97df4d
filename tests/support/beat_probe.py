"""The product's Celery app with a one-second beat entry instead of the product's schedule.

``celery -A tests.support.beat_probe beat`` is the product's beat (the same ``celeryconfig``:
the Redis-locked scheduler, its keys, its lock timeout from ``BEAT_LOCK_TIMEOUT_S``), firing a
task every second into the queue ``PROBE_QUEUE`` (``beat-probe`` unless set), where no worker
takes it: the test reads every fire straight from Redis, and each message says which process
sent it (Celery's ``origin`` header, ``gen<pid>@<host>``).
"""

from __future__ import annotations

import os

from worker.app import app

PROBE_TASK = "tests.beat_probe"
PROBE_QUEUE = os.environ.get("PROBE_QUEUE", "beat-probe")

app.conf.beat_schedule = {
    "probe": {"task": PROBE_TASK, "schedule": 1.0, "options": {"queue": PROBE_QUEUE, "expires": 3600}},
}
