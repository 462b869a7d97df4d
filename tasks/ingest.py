"""The ingest task: one batch of validated points -> the event store -> a confirmation.

* **Stored, then confirmed.** After the store write commits, the task confirms the batch's
  Kafka offsets to the bridge (:mod:`worker.ingest.acks`), which commits them only then. A batch
  whose confirmation never comes (Redis lost it, this worker died) is published again by
  the bridge; the idempotent write makes the copy harmless.
* **Outages are measured in time.** While the store is unavailable the task retries with
  exponential backoff and full jitter, at most ``INGEST_RETRY_BACKOFF_MAX_S`` apart, for up
  to ``INGEST_OUTAGE_TOLERANCE_S`` after its first attempt; each attempt tells the bridge
  the batch is alive (so it is not published again) and the unconfirmed batches pause the
  bridge, so Kafka holds the rest. Only past the tolerance does the batch go to the dead
  letters. If even that write fails, the task keeps retrying: nothing is ever dropped.
* **One write limit for the store.** Each write attempt first takes a token from the bucket
  all ingest workers share (``INGEST_RATE_LIMIT``, :mod:`worker.ingest.write_limit`); without
  one the task waits, at most :func:`_rate_wait_bound`, then retries with the wait as
  countdown instead of holding its slot.
* **Data the store refuses** (found by bisection) goes to the dead letters alone, with the
  store's reason; the rest of the batch is stored.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from worker.celeryapp.app import app
from worker.celeryapp.limits import SOFT_TIME_LIMIT_RATIO
from worker.celeryapp.resources import for_process
from worker.config.settings import Settings
from worker.core import names
from worker.core.events import InvalidEvent, points_from_wire, points_to_builtins, wire_to_builtins
from worker.ingest import metrics
from worker.ingest.acks import send as send_ack
from worker.ingest.deadletter import batch_letter
from worker.ingest.errors import DeadLetterError
from worker.ingest.publisher import closed_channel
from worker.ingest.redis_memory import refused_for_memory
from worker.store import StoreRejected, StoreUnavailable

log = logging.getLogger(__name__)


def _countdown(settings: Settings, retries: int, left_s: float) -> float:
    """Exponential backoff with full jitter, capped, and never past the tolerance.

    Full jitter spreads the retries of many batches that failed together, so a store that
    comes back is not hit by all of them in the same second.
    """
    ceiling = min(settings.ingest_retry_backoff_max_s, settings.ingest_retry_backoff_s * 2 ** min(retries, 30))
    return max(0.0, min(random.uniform(0, ceiling), left_s))


#: The longest a task waits in its slot for a write token before it retries with a countdown.
RATE_WAIT_MAX_S = 5.0


def _rate_wait_bound(settings: Settings) -> float:
    """Waiting for a token stays far below the soft time limit (80% of the hard one): a tenth
    of the hard limit, at most :data:`RATE_WAIT_MAX_S`."""
    return min(RATE_WAIT_MAX_S, settings.task_time_limit_ingest_s / 10)


# ignore_result: nothing reads an ingest task's result, and storing STARTED/SUCCESS in Redis
# per batch is pure overhead on the hot path (Flower still sees the task through events).
@app.task(bind=True, name=names.WRITE_BATCH, max_retries=None, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def write_batch(self: Task[Any, Any], points: str | list[list[Any]], acks: dict[str, Any] | None = None,
                since: float | None = None) -> dict[str, int]:
    """Write a batch; idempotent, so a redelivered or re-published batch is harmless.

    ``points`` is the JSON text :func:`worker.core.events.points_to_wire` made (the list form
    is accepted too: a batch still queued across an upgrade); ``acks`` says where to confirm the
    batch's offsets (absent for replayed dead letters); ``since`` is the first attempt's
    time (wall clock), carried through the retries.
    """
    resources = for_process()
    settings = resources.settings
    ack_client = resources.ack_client
    retries = self.request.retries
    first_attempt = since if since is not None else time.time()
    try:
        batch = points_from_wire(points)
    except InvalidEvent as error:
        # Cannot be fixed by retrying: dead-letter at once (the bridge never sends these;
        # a hand-made or corrupted message can).
        received = wire_to_builtins(points)
        _dead_letter(self, received, error.reason, retries, acks, first_attempt)
        send_ack(ack_client, acks, stored=True)
        return {"written": 0, "dead_lettered": len(received) if isinstance(received, list) else 1, "conflicts": 0}
    held_since = time.monotonic()
    while True:  # a second turn only while Redis is too full to take the retry (_retry)
        send_ack(ack_client, acks, stored=False)  # started (or waiting): the bridge waits for this batch
        wait = resources.write_limit.acquire(_rate_wait_bound(settings))
        if wait > 0:
            metrics.BATCHES.labels("rate_limited").inc()
            log.info("write limit reached, retrying", extra={"task_id": self.request.id, "countdown_s": round(wait, 3)})
            raise self.retry(countdown=wait, kwargs={"acks": acks, "since": first_attempt}) from None
        started = time.perf_counter()
        try:
            conflicts = resources.event_store.write(batch) or 0
            break
        except (StoreUnavailable, SoftTimeLimitExceeded) as error:
            # A write past the soft time limit (TASK_TIME_LIMIT_INGEST_S) is a store that does not
            # answer in time: retried like an outage, instead of the hard limit killing the child.
            waited = time.time() - first_attempt
            left = settings.ingest_outage_tolerance_s - waited
            if left <= 0:
                reason = f"store unavailable for {waited:.0f} s (INGEST_OUTAGE_TOLERANCE_S): {error}"
                _dead_letter(self, points_to_builtins(batch), reason, retries, acks, first_attempt)
                send_ack(ack_client, acks, stored=True)
                metrics.OUTAGE_SECONDS.set(0)
                return {"written": 0, "dead_lettered": len(batch), "conflicts": 0}
            countdown = _countdown(settings, retries, left)
            metrics.BATCHES.labels("retried").inc()
            metrics.OUTAGE_SECONDS.set(waited)
            log.warning("store unavailable, retrying", extra={
                "task_id": self.request.id, "retry": retries + 1, "countdown_s": round(countdown, 2),
                "waited_s": round(waited, 1), "events": len(batch), "error": str(error)[:300]})
            _retry(self, error, countdown, acks, first_attempt, held_since)
            time.sleep(countdown)
        except StoreRejected as error:
            # The store wrote what it could and refused the rest as invalid: retrying cannot
            # help, so the refused points go to the dead letters with the store's reason.
            _dead_letter(self, points_to_builtins(error.rejected), f"store rejected: {error}", retries, acks,
                         first_attempt)
            send_ack(ack_client, acks, stored=True)
            metrics.BATCHES.labels("rejected").inc()
            metrics.EVENTS_WRITTEN.inc(len(batch) - len(error.rejected))
            metrics.CONFLICTS.inc(error.conflicts)
            return {"written": len(batch) - len(error.rejected), "dead_lettered": len(error.rejected),
                    "conflicts": error.conflicts}
    send_ack(ack_client, acks, stored=True)
    metrics.WRITE_SECONDS.observe(time.perf_counter() - started)
    metrics.BATCHES.labels("written").inc()
    metrics.EVENTS_WRITTEN.inc(len(batch))
    metrics.CONFLICTS.inc(conflicts)
    metrics.OUTAGE_SECONDS.set(0)
    log.info("batch written", extra={"task_id": self.request.id, "events": len(batch), "retries": retries,
                                      "conflicts": conflicts})
    return {"written": len(batch), "dead_lettered": 0, "conflicts": conflicts}


def _slot_bound(settings: Settings) -> float:
    """How long a batch may wait in its slot while Redis cannot take its retry: three quarters
    of the soft time limit, so the last write attempt still ends before it."""
    return settings.task_time_limit_ingest_s * SOFT_TIME_LIMIT_RATIO * 0.75


def _retry(task: Task[Any, Any], error: Exception, countdown: float, acks: dict[str, Any] | None,
           first_attempt: float, held_since: float) -> None:
    """Publish the retry (Celery's retry is a new message), or return when Redis refuses it for
    memory (or kombu fails on the channel it closed then: :func:`closed_channel`): the caller
    then waits ``countdown`` and writes again in this slot.

    A retry must not need Redis memory, or a full Redis would never drain: Celery rejects a
    task whose retry cannot be published, and only the bridge's re-read would bring its batch
    back, a confirm timeout later. Held longer than :func:`_slot_bound`, it goes that way.
    """
    try:
        raise task.retry(exc=error, countdown=countdown, kwargs={"acks": acks, "since": first_attempt}) from None
    except Reject as rejected:
        unpublished = refused_for_memory(rejected) or closed_channel(rejected.__context__)
        if not unpublished or time.monotonic() - held_since + countdown > _slot_bound(for_process().settings):
            raise
    log.warning("Redis full: the retry is not published, this slot tries again",
                extra={"task_id": task.request.id, "countdown_s": round(countdown, 2)})


def _dead_letter(task: Task[Any, Any], points: object, reason: str, retries: int, acks: dict[str, Any] | None,
                 first_attempt: float) -> None:
    resources = for_process()
    try:
        resources.dead_letters.write([batch_letter(points, reason, source="ingest", attempt=retries + 1)])
    except DeadLetterError as error:
        countdown = _countdown(resources.settings, retries, resources.settings.ingest_retry_backoff_max_s)
        log.error("dead-letter write failed, retrying the batch", extra={
            "task_id": task.request.id, "countdown_s": countdown, "error": str(error)})
        send_ack(resources.ack_client, acks, stored=False)
        raise task.retry(exc=error, countdown=countdown, kwargs={"acks": acks, "since": first_attempt}) from None
    events = len(points) if isinstance(points, list) else 1
    metrics.BATCHES.labels("dead_lettered").inc()
    metrics.EVENTS_DEAD_LETTERED.inc(events)
    log.error("batch dead-lettered", extra={"task_id": task.request.id, "events": events, "reason": reason[:300]})
