"""Keep a Celery worker alive when Redis restarts under it or fills up (kombu 5.7)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport.virtual import QoS as InMemoryQoS

from worker.ingest.redis_memory import refused_for_memory

log = logging.getLogger(__name__)

_GUARDED = "_aggregator_guard"  # marks a method already wrapped by the full-Redis guards
_LOST = "_aggregator_lost_connection_guard"  # marks one wrapped by the lost-connection guard

# A lost connection leaves the channel without a transport (Celery closed it) or the
# transport without its client. kombu then builds a client from nothing, and the
# AttributeError ended the worker (tests/system/test_redis_faults.py): when Celery
# restored the unacked deliveries, or acknowledged a task that finished in that moment.
# Nothing is lost by skipping either: the deliveries stay in the worker's unacked hash,
# and the visibility sweep queues them again (the tasks are idempotent, docs/guarantees.md).
_ON_LOST = {
    "restore_unacked_once": "unacked deliveries left for the visibility sweep "
                            "(kombu could not build a client to restore them)",
    "ack": "an acknowledgement not sent; the visibility sweep runs the task again",
    "reject": "a rejection not sent; the visibility sweep runs the task again",
}


def _connection_lost(qos: Any) -> bool:
    transport = getattr(qos.channel, "connection", None)
    return transport is None or getattr(transport, "client", None) is None


def guarded(original: Callable[..., Any], outcome: str) -> Callable[..., Any]:
    """``original`` (a method of kombu's Redis QoS) with kombu's crash on a lost connection
    turned into a warning saying ``outcome``; any other ``AttributeError`` is raised."""

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except AttributeError as error:
            if not _connection_lost(self):
                raise
            log.warning(f"lost Redis connection: {outcome}", extra={"error": str(error)})
            return None

    setattr(method, _LOST, True)
    return method


def guard_lost_connection() -> None:
    """Install the guard on kombu's Redis QoS (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    for name, outcome in _ON_LOST.items():
        if not getattr(getattr(qos, name), _LOST, False):
            setattr(qos, name, guarded(getattr(qos, name), outcome))


# A full Redis (maxmemory, noeviction) refuses kombu's record of a delivery it already popped,
# the sweep's lock and the MULTI of an ack or a reject: each raised OutOfMemoryError and ended
# the worker. With these guards consuming frees Redis memory instead of needing it; a worker
# that dies meanwhile leaves no record, and the bridge re-reads its batches from Kafka.


def _on_full(original: Callable[..., Any], fallback: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, with ``fallback`` run instead when Redis refuses it for memory."""

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(self, *args, **kwargs)
        except Exception as error:
            if not refused_for_memory(error):
                raise
            return fallback(self, *args, **kwargs)

    return method


def _append_in_memory(self: Any, message: Any, delivery_tag: Any) -> None:
    log.warning("Redis full: delivery kept in this worker only (its batch is read again from Kafka "
                "if this worker dies before it is done)", extra={"delivery_tag": str(delivery_tag)})
    InMemoryQoS.append(self, message, delivery_tag)


def _skip_sweep(self: Any, *_: Any, **__: Any) -> None:
    log.warning("Redis full: visibility sweep skipped this time")


def _ack_outside_multi(self: Any, delivery_tag: Any) -> None:
    with self.channel.conn_or_acquire() as client:  # ZREM and HDEL are allowed at the limit
        client.pipeline(transaction=False).zrem(self.unacked_index_key, delivery_tag).hdel(
            self.unacked_key, delivery_tag).execute()
    InMemoryQoS.ack(self, delivery_tag)


def _reject_outside_multi(self: Any, delivery_tag: Any, requeue: bool = False) -> None:
    if not requeue:  # a task that failed for good: its delivery goes, as an ack's does
        _ack_outside_multi(self, delivery_tag)
        return
    # Putting it back in its queue needs memory: it stays in the unacked hash instead, put
    # back when this worker stops (worker/celeryapp/liveness.py) or at the visibility timeout.
    log.warning("Redis full: a rejected delivery stays in the unacked hash instead of its queue",
                extra={"delivery_tag": str(delivery_tag)})
    InMemoryQoS.ack(self, delivery_tag)


def guard_full_redis() -> None:
    """Install the full-Redis guards on kombu's Redis QoS (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    if not getattr(qos.append, _GUARDED, False):
        for name, fallback in (("append", _append_in_memory), ("ack", _ack_outside_multi),
                               ("reject", _reject_outside_multi), ("restore_visible", _skip_sweep)):
            guarded_method = _on_full(getattr(qos, name), fallback)
            setattr(guarded_method, _GUARDED, True)
            setattr(qos, name, guarded_method)
