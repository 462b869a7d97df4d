"""A task waiting on a PostgreSQL that does not answer ends at its soft time limit: a timer
armed at the task's start shuts the process's busy connections :data:`GRACE_S` after it
(:func:`worker.db.connection.sever_all` says why nothing else ends such a wait).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import task_postrun, task_prerun

from worker.db.connection import sever_all

log = logging.getLogger(__name__)

#: After the soft limit: its signal is pending by then (the pool checks time limits once a
#: second), so ``SoftTimeLimitExceeded`` is what the task raises.
GRACE_S = 2.0

_armed: dict[str, threading.Timer] = {}


def _sever(task_name: str, task_id: str) -> None:
    severed = sever_all()
    log.warning("task past its soft time limit: its PostgreSQL connections shut", extra={
        "task": task_name, "task_id": task_id, "connections": severed})


@task_prerun.connect
def _arm(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is None or task_id is None or task.request.is_eager:
        return
    soft = (task.request.timelimit or (None, None))[1] or task.soft_time_limit
    if soft:
        timer = threading.Timer(soft + GRACE_S, _sever, (task.name, task_id))
        timer.daemon = True
        _armed[task_id] = timer
        timer.start()


@task_postrun.connect
def _disarm(task_id: str | None = None, **_: Any) -> None:
    timer = _armed.pop(task_id or "", None)
    if timer is not None:
        timer.cancel()
