"""The maintenance task (beat, ``MAINTENANCE_SCHEDULE``, queue ``maintenance``, never the
trends worker's one slot). A tick fired twice runs once: the task claims its cron slot
(:mod:`worker.maintenance.slots`)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from celery import Task

from worker.celeryapp.app import app
from worker.celeryapp.resources import for_process
from worker.core import names
from worker.core.cron import latest_tick
from worker.db.connection import Database
from worker.maintenance.run import MaintenanceInFlight, maintain

log = logging.getLogger(__name__)

#: Seconds after which a run starts no further thinning step.
BUDGET_S = 300.0


@app.task(name=names.MAINTAIN, bind=True)
def maintain_task(self: Task[Any, Any]) -> dict[str, Any]:
    resources = for_process()
    settings = resources.settings
    now = datetime.now(UTC)
    slot = latest_tick(settings.maintenance_schedule, now)
    if not resources.maintenance_slots.claim(slot, f"{self.request.hostname}:{self.request.id}"):
        log.warning("maintenance skipped: this tick already ran", extra={
            "slot": slot.isoformat(), "claimed_by": resources.maintenance_slots.holder(slot)})
        return {"status": "duplicate", "slot": slot.isoformat()}
    try:
        report = maintain(Database.from_settings(settings), settings.retention_policy(), now,
                          budget_s=BUDGET_S)
    except MaintenanceInFlight:
        log.warning("maintenance skipped: another run is in flight")
        return {"status": "skipped"}
    return {"status": "done", "slot": slot.isoformat(), **report.summary()}
