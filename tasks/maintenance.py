"""The maintenance task (beat, ``MAINTENANCE_SCHEDULE``, queue ``maintenance``).

Served by the default worker beside the morning post, never by the trends worker: its one
slot belongs to the trend runs. Thinning steps stop being started after
:data:`BUDGET_S`, so a backlog of history days (after an upgrade) is worked off over a few
runs instead of holding the morning post; the next run continues where this one stopped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from worker.celeryapp.app import app
from worker.celeryapp.resources import for_process
from worker.core import names
from worker.db.connection import Database
from worker.maintenance.run import MaintenanceInFlight, maintain

log = logging.getLogger(__name__)

#: Seconds after which a run starts no further thinning step.
BUDGET_S = 300.0


@app.task(name=names.MAINTAIN)
def maintain_task() -> dict[str, Any]:
    settings = for_process().settings
    try:
        report = maintain(Database.from_settings(settings), settings.retention_policy(), datetime.now(UTC),
                          budget_s=BUDGET_S)
    except MaintenanceInFlight:
        log.warning("maintenance skipped: another run is in flight")
        return {"status": "skipped"}
    return {"status": "done", **report.summary()}
