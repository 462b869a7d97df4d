"""A worker's pop that leaves a trace in Redis, so a worker killed mid-pop loses nothing.

kombu's Redis consumer pops with ``BRPOP``: Redis removes the message and writes it to the
worker's socket, and the worker records it in its unacked hash only once it has read it. A
worker killed in between loses the message: it is in no queue and no hash, and only the
bridge's re-read after ``BRIDGE_CONFIRM_TIMEOUT_S`` brings the batch back (celery#4354).
Here a worker process pops with ``BLMOVE`` into a list of its own
(``inflight:<worker id>:<queue>``) and removes the message from it once kombu has recorded
the delivery. The sweep of a dead worker (worker/celeryapp/liveness.py) moves those lists
back to their queues as it restores the worker's unacked deliveries. A worker killed after
the record and before the removal leaves the message in both places: it runs twice, and
the idempotent write makes that harmless (docs/guarantees.md).

``BLMOVE`` pops from one list, where ``BRPOP`` pops from many: each pop waits on one queue in
turn (``priority_steps`` is ``[0]`` in celeryconfig.py, so a queue is one list). A full Redis
refuses ``BLMOVE``, which may grow it; the next pop is then a plain ``BRPOP``, because
consuming is what frees Redis (worker/celeryapp/kombu_guard.py keeps such a delivery in the
worker's memory only).
"""

from __future__ import annotations

from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import redis as _kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker.ingest.redis_memory import refused_for_memory

kombu_redis: Any = _kombu_redis  # the stubs (celery-types) do not reach the internals used here


def inflight_prefix(worker_id: str) -> str:
    """The prefix of a worker's in-flight lists; the queue's name completes each key."""
    return f"inflight:{worker_id}:"


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel, popping with ``BLMOVE`` when ``inflight_prefix`` is set
    (celeryd_init sets it for each worker process; publishers keep kombu's own pop)."""

    inflight_prefix: str | None = None
    from_transport_options = (*kombu_redis.Channel.from_transport_options, "inflight_prefix")
    _moving: str | None = None  # the queue of the BLMOVE in flight
    _plain_pop = False  # the last BLMOVE was refused for memory

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self.inflight_prefix is None or self._plain_pop or self.global_keyprefix:
            self._moving, self._plain_pop = None, False
            super()._brpop_start(timeout)
            return
        queues = self._queue_cycle.consume(1)
        if not queues:
            return
        self._moving = queue = queues[0]
        self._in_poll = self.client.connection
        self._brpop_sent_at = monotonic()  # kombu's stale-reply check reads it
        self.client.connection.send_command("BLMOVE", queue, self.inflight_prefix + queue, "RIGHT", "LEFT",
                                            self.brpop_timeout if timeout is None else timeout)

    def _brpop_read(self, **options: Any) -> bool:
        queue, prefix = self._moving, self.inflight_prefix
        if queue is None or prefix is None:
            return bool(super()._brpop_read(**options))
        try:
            try:
                item = self.client.parse_response(self.client.connection, "BLMOVE", **options)
            except self.connection_errors:
                self.client.connection.disconnect()  # reconnected at the next pop, as kombu does
                raise
            except Exception as error:
                if not refused_for_memory(error):
                    raise
                self._plain_pop = True
                raise Empty() from error
            self._queue_cycle.rotate(queue)
            if item is None:
                raise Empty()
            self.connection._deliver(loads(bytes_to_str(item)), queue)  # records it in unacked
            self.client.lrem(prefix + queue, 1, item)
            return True
        finally:
            self._in_poll = None
            self._flush_brpop_reauth()


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`: a worker's ``broker_transport``."""

    Channel = Channel


TRANSPORT = f"{__name__}:Transport"


def restore_inflight(client: Any, worker_id: str) -> int:
    """Move a dead worker's in-flight messages back to the head of their queues; how many are left."""
    prefix = inflight_prefix(worker_id)
    left = 0
    for key in client.scan_iter(match=prefix + "*"):
        queue = bytes_to_str(key)[len(prefix):]
        while client.lmove(key, queue, "RIGHT", "RIGHT") is not None:
            pass
        left += int(client.llen(key))
    return left
