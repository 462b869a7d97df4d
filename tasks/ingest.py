"""The ingest task: one batch of validated points -> the event store -> a confirmation to the
bridge (:mod:`worker.ingest.acks`) once the write committed. A store outage is retried for
``INGEST_OUTAGE_TOLERANCE_S``, then the batch is dead-lettered; nothing is dropped
(docs/guarantees.md).
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from celery import Task
from celery.exceptions import Reject, SoftTimeLimitExceeded

from worker.celeryapp.app import app
from worker.celeryapp.limits import SOFT_TIME_LIMIT_RATIO
from worker.celeryapp.resources import Resources, for_process
from worker.core import names
from worker.core.events import InvalidEvent, Point, points_from_wire, points_to_builtins, wire_to_builtins
from worker.ingest import metrics
from worker.ingest.acks import send as send_ack
from worker.ingest.deadletter import batch_letter
from worker.ingest.errors import DeadLetterError
from worker.ingest.publisher import closed_channel
from worker.ingest.redis_memory import refused_for_memory
from worker.store import StoreRejected, StoreUnavailable

log = logging.getLogger(__name__)

#: The longest a task waits in its slot for a write token before it retries with a countdown.
RATE_WAIT_MAX_S = 5.0


@dataclass
class _Attempt:
    """One run of the task, with what its retries carry (``acks``, ``since``)."""

    task: Task[Any, Any]
    acks: dict[str, Any] | None
    since: float  # the first attempt's wall-clock time
    resources: Resources = field(default_factory=for_process)
    held_since: float = field(default_factory=time.monotonic)

    @property
    def retries(self) -> int:
        return int(self.task.request.retries)

    def confirm(self, *, stored: bool) -> None:
        send_ack(self.resources.ack_client, self.acks, stored=stored)

    def retry(self, countdown: float, error: Exception | None = None) -> Exception:
        return self.task.retry(exc=error, countdown=countdown, kwargs={"acks": self.acks, "since": self.since})

    def countdown(self, left_s: float) -> float:
        """Exponential backoff with full jitter (a store that comes back is not hit by every
        batch in the same second), capped, and never past the tolerance."""
        settings = self.resources.settings
        ceiling = min(settings.ingest_retry_backoff_max_s, settings.ingest_retry_backoff_s * 2 ** min(self.retries, 30))
        return max(0.0, min(random.uniform(0, ceiling), left_s))

    def dead_letter(self, points: object, reason: str) -> int:
        """Dead-letter ``points`` and confirm the batch; how many events went. A failed
        dead-letter write retries the whole task: nothing is dropped."""
        try:
            self.resources.dead_letters.write([batch_letter(points, reason, source="ingest", attempt=self.retries + 1)])
        except DeadLetterError as error:
            countdown = self.countdown(self.resources.settings.ingest_retry_backoff_max_s)
            log.error("dead-letter write failed, retrying the batch", extra={
                "task_id": self.task.request.id, "countdown_s": countdown, "error": str(error)})
            self.confirm(stored=False)
            raise self.retry(countdown, error) from None
        self.confirm(stored=True)
        events = len(points) if isinstance(points, list) else 1
        metrics.BATCHES.labels("dead_lettered").inc()
        metrics.EVENTS_DEAD_LETTERED.inc(events)
        log.error("batch dead-lettered", extra={"task_id": self.task.request.id, "events": events,
                                                "reason": reason[:300]})
        return events


# ignore_result: nothing reads an ingest task's result, and storing STARTED/SUCCESS in Redis
# per batch is pure overhead on the hot path (Flower still sees the task through events).
@app.task(bind=True, name=names.WRITE_BATCH, max_retries=None, acks_late=True,
          reject_on_worker_lost=True, ignore_result=True)
def write_batch(self: Task[Any, Any], points: str | list[list[Any]], acks: dict[str, Any] | None = None,
                since: float | None = None) -> dict[str, int]:
    """Write a batch; idempotent, so a redelivered or re-published batch is harmless.

    ``points`` is :func:`worker.core.events.points_to_wire`'s JSON text (or its list form);
    ``acks`` says where to confirm the offsets (absent for replayed dead letters).
    """
    attempt = _Attempt(self, acks, since if since is not None else time.time())
    try:
        batch = points_from_wire(points)
    except InvalidEvent as error:  # retrying cannot fix a hand-made or corrupted message
        return _result(dead_lettered=attempt.dead_letter(wire_to_builtins(points), error.reason))
    while True:  # a second turn only while Redis is too full to take the retry (_retry)
        attempt.confirm(stored=False)  # started (or waiting): the bridge waits for this batch
        _take_token(attempt)
        started = time.perf_counter()
        try:
            conflicts = attempt.resources.event_store.write(batch) or 0
        except (StoreUnavailable, SoftTimeLimitExceeded) as error:
            # Past the soft time limit the store did not answer in time: an outage, not a kill.
            if (dead := _outage(attempt, batch, error)) is not None:
                return dead
        except StoreRejected as error:  # retrying cannot help: the refused points go alone
            return _rejected(attempt, batch, error)
        else:
            return _written(attempt, batch, conflicts, time.perf_counter() - started)


def _result(written: int = 0, dead_lettered: int = 0, conflicts: int = 0) -> dict[str, int]:
    return {"written": written, "dead_lettered": dead_lettered, "conflicts": conflicts}


def _take_token(attempt: _Attempt) -> None:
    """Wait for a write token at most a tenth of the hard time limit (far below the soft
    one), else retry with the wait as countdown instead of holding the slot."""
    bound = min(RATE_WAIT_MAX_S, attempt.resources.settings.task_time_limit_ingest_s / 10)
    wait = attempt.resources.write_limit.acquire(bound)
    if wait > 0:
        metrics.BATCHES.labels("rate_limited").inc()
        log.info("write limit reached, retrying", extra={"task_id": attempt.task.request.id,
                                                         "countdown_s": round(wait, 3)})
        raise attempt.retry(wait) from None


def _written(attempt: _Attempt, batch: list[Point], conflicts: int, seconds: float) -> dict[str, int]:
    attempt.confirm(stored=True)
    metrics.WRITE_SECONDS.observe(seconds)
    metrics.BATCHES.labels("written").inc()
    metrics.EVENTS_WRITTEN.inc(len(batch))
    metrics.CONFLICTS.inc(conflicts)
    metrics.OUTAGE_SECONDS.set(0)
    log.info("batch written", extra={"task_id": attempt.task.request.id, "events": len(batch),
                                     "retries": attempt.retries, "conflicts": conflicts})
    return _result(written=len(batch), conflicts=conflicts)


def _rejected(attempt: _Attempt, batch: list[Point], error: StoreRejected) -> dict[str, int]:
    attempt.dead_letter(points_to_builtins(error.rejected), f"store rejected: {error}")
    written = len(batch) - len(error.rejected)
    metrics.BATCHES.labels("rejected").inc()
    metrics.EVENTS_WRITTEN.inc(written)
    metrics.CONFLICTS.inc(error.conflicts)
    return _result(written=written, dead_lettered=len(error.rejected), conflicts=error.conflicts)


def _outage(attempt: _Attempt, batch: list[Point], error: Exception) -> dict[str, int] | None:
    """Retry the batch later, or dead-letter it past the tolerance; None: write again now
    (Redis could not take the retry and the slot waited the countdown)."""
    waited = time.time() - attempt.since
    left = attempt.resources.settings.ingest_outage_tolerance_s - waited
    if left <= 0:
        reason = f"store unavailable for {waited:.0f} s (INGEST_OUTAGE_TOLERANCE_S): {error}"
        events = attempt.dead_letter(points_to_builtins(batch), reason)
        metrics.OUTAGE_SECONDS.set(0)
        return _result(dead_lettered=events)
    countdown = attempt.countdown(left)
    metrics.BATCHES.labels("retried").inc()
    metrics.OUTAGE_SECONDS.set(waited)
    log.warning("store unavailable, retrying", extra={
        "task_id": attempt.task.request.id, "retry": attempt.retries + 1, "countdown_s": round(countdown, 2),
        "waited_s": round(waited, 1), "events": len(batch), "error": str(error)[:300]})
    _retry(attempt, error, countdown)
    time.sleep(countdown)
    return None


def _retry(attempt: _Attempt, error: Exception, countdown: float) -> None:
    """Publish the retry, or return when Redis refuses it for memory (or kombu fails on the
    channel it closed then): a full Redis must still drain, so the slot waits and writes again
    itself, for at most three quarters of the soft time limit.
    """
    try:
        raise attempt.retry(countdown, error) from None
    except Reject as rejected:
        unpublished = refused_for_memory(rejected) or closed_channel(rejected.__context__)
        slot_bound = attempt.resources.settings.task_time_limit_ingest_s * SOFT_TIME_LIMIT_RATIO * 0.75
        if not unpublished or time.monotonic() - attempt.held_since + countdown > slot_bound:
            raise
    log.warning("Redis full: the retry is not published, this slot tries again",
                extra={"task_id": attempt.task.request.id, "countdown_s": round(countdown, 2)})
