"""Keep a Celery worker alive when Redis restarts under it (kombu 5.7's restore crash).

Seen here with celery 5.7.0, kombu 5.7.0, redis-py 8.1 (3 of 4 restarts of Redis while
the worker held deliveries): on the lost connection Celery closes the channel, the channel
asks its QoS to put the unacknowledged deliveries back (``restore_unacked_once``), the
restore needs a Redis client, and building one reads ``self.connection.client.hostname`` —
but the transport has already dropped its client. The ``AttributeError`` escapes Celery's
connection-error handling and the worker exits ("Unrecoverable error: AttributeError(
"'NoneType' object has no attribute 'hostname'")").

Nothing needs restoring at that moment: the deliveries are still in Redis's ``unacked`` hash
(kombu's visibility sweep puts them back), or Redis lost them, and then the bridge reads
their batches again from Kafka because no confirmation came (``worker/ingest/bridge/offsets.py``).
So the guard lets that one step fail quietly and Celery reconnects as it does after any
other connection error. Only that exception from that call is caught; anything else still
stops the worker. ``tests/system/test_redis_faults.py`` restarts Redis under a working
worker and fails without the guard. compose and ``aggregator dev`` also restart a worker
that exits, whatever the cause.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from kombu.transport.virtual import QoS as InMemoryQoS

from worker.ingest.redis_memory import refused_for_memory

log = logging.getLogger(__name__)

_GUARDED = "_aggregator_restore_guard"


def guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a QoS's ``restore_unacked_once``) with the one crash turned into a warning."""

    @functools.wraps(original)
    def restore_unacked_once(self: Any, stderr: Any = None) -> Any:
        try:
            return original(self, stderr)
        except AttributeError as error:
            if "hostname" not in str(error):
                raise
            log.warning("lost Redis connection: unacked deliveries left for the visibility sweep "
                        "(kombu could not build a client to restore them)", extra={"error": str(error)})
            return None

    setattr(restore_unacked_once, _GUARDED, True)
    return restore_unacked_once


def guard_restore_unacked() -> None:
    """Install the guard on kombu's Redis QoS (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    if not getattr(qos.restore_unacked_once, _GUARDED, False):
        qos.restore_unacked_once = guarded(qos.restore_unacked_once)


# -- a full Redis (maxmemory, noeviction) -------------------------------------------------------
#
# A worker records each delivery in the ``unacked`` hash (ZADD + HSET, both refused at
# ``maxmemory``) *after* BRPOP has taken it off the queue, and its visibility sweep takes a
# lock (SET NX, refused too). kombu lets the ``OutOfMemoryError`` escape Celery's event loop:
# "Unrecoverable error: server:OutOfMemoryError", the worker exits, and the message it had
# just popped is gone. And at the limit Redis refuses *every* command queued in a MULTI, so
# kombu's transactional ack (ZREM + HDEL) fails too. With the guards the delivery is kept in
# the worker's memory only and the ack's removal is sent outside a transaction (ZREM and HDEL
# are allowed at the limit), so consuming frees Redis memory instead of needing it. The price:
# while Redis is full, a worker that dies leaves no record of its deliveries for the
# visibility sweep; their batches are read again from Kafka by the bridge when no
# confirmation comes (worker/ingest/bridge/offsets.py).

_FULL_GUARDED = "_aggregator_full_redis_guard"


def _unrecorded_append(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def append(self: Any, message: Any, delivery_tag: Any) -> None:
        try:
            original(self, message, delivery_tag)
        except Exception as error:
            if not refused_for_memory(error):
                raise
            log.warning("Redis full: delivery kept in this worker only (its batch is read again from Kafka "
                        "if this worker dies before it is done)", extra={"delivery_tag": str(delivery_tag)})
            InMemoryQoS.append(self, message, delivery_tag)

    return append


def _skipped_sweep_when_full(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def restore_visible(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            original(self, *args, **kwargs)
        except Exception as error:
            if not refused_for_memory(error):
                raise
            log.warning("Redis full: visibility sweep skipped this time")

    return restore_visible


def _ack_outside_multi(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def ack(self: Any, delivery_tag: Any) -> None:
        try:
            original(self, delivery_tag)
        except Exception as error:
            if not refused_for_memory(error):
                raise
            with self.channel.conn_or_acquire() as client:
                client.pipeline(transaction=False).zrem(self.unacked_index_key, delivery_tag).hdel(
                    self.unacked_key, delivery_tag).execute()
            InMemoryQoS.ack(self, delivery_tag)

    return ack


def guard_full_redis() -> None:
    """Install the full-Redis guards on kombu's Redis QoS (idempotent)."""
    from kombu.transport import redis as kombu_redis

    qos: Any = kombu_redis.QoS
    if not getattr(qos.append, _FULL_GUARDED, False):
        for name, wrap in (("append", _unrecorded_append), ("ack", _ack_outside_multi),
                           ("restore_visible", _skipped_sweep_when_full)):
            guarded_method = wrap(getattr(qos, name))
            setattr(guarded_method, _FULL_GUARDED, True)
            setattr(qos, name, guarded_method)
