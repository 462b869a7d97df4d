"""Where a dead-letter-guard stop is recorded: one Redis hash per consumer group and topic.

The guard (:mod:`worker.ingest.bridge.dlq_guard`) decides inside one bridge; the stop must
outlive it and reach three other parties, so it is written to Redis, the one service every
bridge, `aggregator health` and the operator's `aggregator bridge resume` already talk to:

* **the other bridges of the group**: a stream that turned invalid is invalid on every
  partition, so the whole group stops (each bridge polls the record about once a second);
* **a restarted bridge**: it starts stopped while the record names the settings it runs
  with, so a restart alone does not dead-letter another window of the stream; started with
  a changed ``BRIDGE_MAX_DLQ_RATIO`` or ``BRIDGE_DLQ_MIN_EVENTS`` it removes the record (the
  operator's decision) and consumes;
* **`aggregator health bridge`**, which fails while the record exists, with its reason.

No TTL: the stop lasts until an operator lifts it (a process that died does not lift it).
A state file would reach neither the other bridges nor a health check in another container;
the metrics endpoint is optional (``BRIDGE_METRICS_PORT=0``) and dies with the process.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # `aggregator --help` imports this through health: no client library at import
    import redis


def guard_key(group: str, topic: str) -> str:
    return f"aggregator:bridge:dlq-guard:{group}:{topic}"


def fingerprint(max_ratio: float, window: int) -> str:
    """The settings a stop was decided under; a bridge started with others lifts it."""
    return f"BRIDGE_MAX_DLQ_RATIO={max_ratio:g} BRIDGE_DLQ_MIN_EVENTS={window}"


@dataclass(frozen=True, slots=True)
class GuardStop:
    reason: str  # the guard's one-line description
    settings: str  # :func:`fingerprint` of the tripping bridge
    at: str  # ISO time (UTC) of the trip
    by: str  # host:pid of the bridge that tripped


class GuardRecords(Protocol):
    """The stop's record (Redis in production, a dict in the loop's unit tests)."""

    def read(self) -> GuardStop | None: ...

    def write(self, stop: GuardStop) -> None: ...

    def clear(self) -> GuardStop | None: ...


class RedisGuardRecords:
    """The record as one Redis string holding JSON (read and cleared atomically)."""

    def __init__(self, client: redis.Redis, group: str, topic: str) -> None:
        self._client = client
        self.key = guard_key(group, topic)

    def read(self) -> GuardStop | None:
        return _parse(self._client.get(self.key))

    def write(self, stop: GuardStop) -> None:
        # NX: the first trip's reason stays; a second bridge tripping says nothing new.
        self._client.set(self.key, json.dumps(asdict(stop)), nx=True)

    def clear(self) -> GuardStop | None:
        """Lift the stop; returns what it was (None: there was none)."""
        return _parse(self._client.getdel(self.key))


def _parse(raw: object) -> GuardStop | None:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    try:
        fields = json.loads(text)
        return GuardStop(str(fields["reason"]), str(fields["settings"]), str(fields["at"]), str(fields["by"]))
    except (ValueError, KeyError, TypeError):
        # Written by hand or by another version: still a stop, with whatever it says.
        return GuardStop(text[:300], "", "", "")
