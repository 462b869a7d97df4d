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
