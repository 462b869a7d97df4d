"""Confirmations from the ingest task to the bridge: which Kafka offsets are in the store.

One Redis list per partition, ``aggregator:acks:<group>:<topic>:<partition>``, with items
``s:<first>:<last>`` (stored, or dead-lettered) and ``a:<first>:<last>`` (alive: started or
waiting for the store). A lost confirmation costs a duplicate write, never an event; the
lists expire after a day.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis

log = logging.getLogger(__name__)

STORED, ALIVE = "s", "a"
ACK_TTL_S = 24 * 3600
DRAIN_MAX = 10_000  # items per partition per read: a backlog is drained over a few loops


@dataclass(frozen=True, slots=True)
class Ack:
    partition: int
    first: int
    last: int
    stored: bool


def key_prefix(group: str, topic: str) -> str:
    return f"aggregator:acks:{group}:{topic}"


def ack_spec(group: str, topic: str, ranges: Iterable[tuple[int, int, int]]) -> dict[str, Any]:
    """What travels with an ingest task: where to confirm, and which ranges it carries."""
    return {"key": key_prefix(group, topic), "ranges": [[p, first, last] for p, first, last in sorted(ranges)]}


def send(client: redis.Redis, spec: Mapping[str, Any] | None, *, stored: bool) -> bool:
    """Confirm (or sign life for) the task's ranges; False when Redis did not take it. Never
    raises: a lost confirmation costs a duplicate write, never an event."""
    if not spec:
        return True
    try:
        pipe = client.pipeline(transaction=False)
        for partition, first, last in spec["ranges"]:
            key = f"{spec['key']}:{int(partition)}"
            pipe.rpush(key, f"{STORED if stored else ALIVE}:{int(first)}:{int(last)}")
            pipe.expire(key, ACK_TTL_S)
        pipe.execute()
    except (redis.RedisError, OSError, KeyError, TypeError, ValueError) as error:
        log.warning("confirmation not sent; the bridge will publish the batch again",
                    extra={"stored": stored, "error": str(error)[:200]})
        return False
    return True


class AckReader:
    """The bridge's side: take the confirmations of the partitions it owns."""

    def __init__(self, client: redis.Redis, group: str, topic: str) -> None:
        self._client = client
        self._prefix = key_prefix(group, topic)

    def drain(self, partitions: Sequence[int]) -> list[Ack]:
        """Pop every waiting confirmation of ``partitions`` (LPOP with a count: atomic)."""
        if not partitions:
            return []
        pipe = self._client.pipeline(transaction=False)
        for partition in partitions:
            pipe.lpop(f"{self._prefix}:{partition}", DRAIN_MAX)
        acks = []
        for partition, items in zip(partitions, pipe.execute(), strict=True):
            for item in items or ():
                with contextlib.suppress(ValueError):  # not a confirmation: skipped
                    kind, first, last = (item.decode() if isinstance(item, bytes) else item).split(":")
                    acks.append(Ack(partition, int(first), int(last), kind == STORED))
        return acks
