"""Publishing batches of points as ingest tasks, from one thread (the Celery app is not
thread-safe, celery#4480). Redis gives no publisher confirm: a publish that raises leaves the
batch with the caller, uncommitted.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from worker.core import names
from worker.core.events import Point, points_to_wire
from worker.ingest.errors import PublishError

log = logging.getLogger(__name__)

RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
#: Socket timeout of the bridge's Redis connections: a publish that blocks (Redis paused or
#: silent) must fail fast, so the batch stays with the bridge and SIGTERM keeps its deadline.
PUBLISH_TIMEOUT_S = 2.0


def bounded_transport_options(options: dict[str, Any], timeout_s: float = PUBLISH_TIMEOUT_S) -> dict[str, Any]:
    """The broker transport options of a publishing process: short socket timeouts, one retry."""
    return {**options, "socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, **RETRY_POLICY}


def batch_task_id(topic: str, ranges: Iterable[tuple[int, int, int]]) -> str:
    """``ingest:<topic>:p<partition>:<first>-<last>,…`` (hashed when it gets long): a copy of a
    batch is recognisable in Flower."""
    spans = ",".join(f"p{p}:{first}-{last}" for p, first, last in sorted(ranges))
    text = f"ingest:{topic}:{spans}"
    if len(text) <= 150:
        return text
    return f"ingest:{topic}:h{hashlib.blake2b(spans.encode(), digest_size=12).hexdigest()}"


def closed_channel(error: BaseException | None) -> bool:
    """kombu 5.7's failure on a channel it closed itself (seen with a full Redis): a pooled
    producer left on it fails reading ``self.connection.client``. A failed publish like any
    other; the next one gets a live channel."""
    return isinstance(error, AttributeError) and "has no attribute 'client'" in str(error)


class IngestPublisher:
    def __init__(self, app: Celery, queue: str, *, timeout_s: float = PUBLISH_TIMEOUT_S) -> None:
        self.app = app
        self.queue = queue
        # Connect and write, for the first attempt and the retry, plus the pause between.
        self.worst_case_s = (RETRY_POLICY["max_retries"] + 1) * 2 * timeout_s + RETRY_POLICY["interval_max"]

    def declare(self) -> None:
        """Declare the ingest queue and its exchange binding in Redis (kombu#1063)."""
        try:
            with self.app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, interval_step=1, interval_max=1)
                channel = conn.default_channel
                for queue in self.app.amqp.queues.values():
                    queue.bind(channel).declare()
        except (OperationalError, OSError, redis.RedisError) as error:
            raise PublishError(f"cannot declare queues: {error}") from error

    def publish(self, points: list[Point], task_id: str, acks: dict[str, Any] | None = None) -> None:
        """Hand a batch to Redis; ``acks`` says where the task confirms its offsets as stored."""
        try:
            # argsrepr: what Flower and the worker log show instead of a truncated JSON text.
            self.app.send_task(names.WRITE_BATCH, args=[points_to_wire(points)], kwargs={"acks": acks} if acks else {},
                               argsrepr=f"[<{len(points)} points>]", task_id=task_id, queue=self.queue,
                               routing_key=self.queue, retry=True, retry_policy=RETRY_POLICY)
        except (OperationalError, OSError, redis.RedisError) as error:
            raise PublishError(f"publish of {task_id} failed: {error}") from error
        except AttributeError as error:
            if not closed_channel(error):
                raise
            raise PublishError(f"publish of {task_id} failed on a closed kombu channel: {error}") from error
