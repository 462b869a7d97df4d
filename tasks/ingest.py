"""The ingest task: one batch of validated points -> the event store.

Retries with exponential backoff and full jitter while the store is unavailable; after the
retry budget the batch goes to the dead-letter topic (confirmed) and the log says so. If
even that write fails, the task keeps retrying: nothing is ever dropped.
"""

from __future__ import annotations

import logging
import random
from typing import Any

from celery import Task

from worker.app import app
from worker.deadletter import DeadLetterError, batch_letter
from worker.events import InvalidEvent, points_from_wire, points_to_builtins, wire_to_builtins
from worker.runtime import dead_letters, event_store
from worker.settings import get_settings
from worker.store import StoreRejected, StoreUnavailable

log = logging.getLogger(__name__)


def _countdown(retries: int) -> float:
    """Exponential backoff with full jitter (Celery's helper only takes whole seconds).

    Full jitter spreads the retries of many batches that failed together, so a store that
    comes back is not hit by all of them in the same second.
    """
    settings = get_settings()
    ceiling = min(settings.ingest_retry_backoff_max_s, settings.ingest_retry_backoff_s * 2**retries)
    return random.uniform(0, ceiling)


# ignore_result: nothing reads an ingest task's result, and storing STARTED/SUCCESS in Redis
# per batch is pure overhead on the hot path (Flower still sees the task through events).
@app.task(bind=True, name="tasks.ingest.write_batch", max_retries=None, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def write_batch(self: Task[Any, Any], points: str | list[list[Any]]) -> dict[str, int]:
    """Write a batch; idempotent, so a redelivered or re-published batch is harmless.

    ``points`` is the JSON text :func:`worker.events.points_to_wire` made (the list form
    is accepted too, from replays and older bridges).
    """
    settings = get_settings()
    retries = self.request.retries
    try:
        batch = points_from_wire(points)
    except InvalidEvent as error:
        # Cannot be fixed by retrying: dead-letter at once (the bridge never sends these;
        # a hand-made or corrupted message can).
        received = wire_to_builtins(points)
        _dead_letter(self, received, error.reason, retries)
        return {"written": 0, "dead_lettered": len(received) if isinstance(received, list) else 1}
    try:
        event_store().write(batch)
    except StoreUnavailable as error:
        if retries >= settings.ingest_max_retries:
            reason = f"store unavailable after {retries} retries: {error}"
            _dead_letter(self, points_to_builtins(batch), reason, retries)
            return {"written": 0, "dead_lettered": len(batch)}
        countdown = _countdown(retries)
        log.warning("store unavailable, retrying", extra={
            "task_id": self.request.id, "retry": retries + 1, "countdown_s": countdown,
            "events": len(batch), "error": str(error)[:300]})
        raise self.retry(exc=error, countdown=countdown) from None
    except StoreRejected as error:
        # The store wrote what it could and refused the rest as invalid: retrying cannot
        # help, so the refused points go to the dead letters with the store's reason.
        _dead_letter(self, points_to_builtins(error.rejected), f"store rejected: {error}", retries)
        return {"written": len(batch) - len(error.rejected), "dead_lettered": len(error.rejected)}
    log.info("batch written", extra={"task_id": self.request.id, "events": len(batch),
                                      "retries": retries})
    return {"written": len(batch), "dead_lettered": 0}


def _dead_letter(task: Task[Any, Any], points: object, reason: str, retries: int) -> None:
    try:
        dead_letters().write([batch_letter(points, reason, source="ingest", attempt=retries + 1)])
    except DeadLetterError as error:
        countdown = _countdown(retries)
        log.error("dead-letter write failed, retrying the batch", extra={
            "task_id": task.request.id, "countdown_s": countdown, "error": str(error)})
        raise task.retry(exc=error, countdown=countdown) from None
    events = len(points) if isinstance(points, list) else 1
    log.error("batch dead-lettered", extra={"task_id": task.request.id, "events": events, "reason": reason[:300]})
