"""Where a dead-letter-guard stop is recorded: one Redis key per consumer group and topic,
which the group's other bridges, a restarted bridge and `aggregator health` all reach. No
TTL: only an operator lifts it (docs/operating.md, "Dead-letter guard").
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Protocol

from worker.ingest.bridge.dlq_guard import DlqGuard
from worker.ingest.bridge.state import BridgeStats

if TYPE_CHECKING:  # `aggregator --help` imports this through health: no client library at import
    import redis

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GuardStop:
    reason: str  # the guard's one-line description
    settings: str  # the guard's settings where it tripped; a bridge started with others lifts the stop
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
        self.key = f"aggregator:bridge:dlq-guard:{group}:{topic}"

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


class GuardSync:
    """The bridge's side of the stop: its guard's trip recorded, the group's record obeyed;
    ``stop`` is the reason while the guard (this bridge's or another's) holds the partitions."""

    POLL_S = 1.0  # how often the group's record is read

    def __init__(self, guard: DlqGuard, records: GuardRecords | None, stats: BridgeStats) -> None:
        self.guard = guard
        self.records = records
        self.stats = stats
        self.settings = f"BRIDGE_MAX_DLQ_RATIO={guard.max_ratio:g} BRIDGE_DLQ_MIN_EVENTS={guard.window}"
        self.stop: str | None = None
        self._unrecorded: GuardStop | None = None  # our trip, not yet in Redis
        self._read_at = float("-inf")

    def observe(self, partition: int, offset: int, now: float, reason: str | None) -> None:
        trip = self.guard.observe(partition, offset, now, reason)
        if trip is None:
            return
        self.stop = trip.describe()
        self.stats.dlq_guard_trips += 1
        self._unrecorded = GuardStop(self.stop, self.settings, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     f"{socket.gethostname()}:{os.getpid()}")
        log.error("dead-letter guard tripped: stopped consuming, Kafka keeps the rest; resume with "
                  "`aggregator bridge resume` or restart with a changed BRIDGE_MAX_DLQ_RATIO", extra={
                      "invalid": trip.invalid, "window": trip.window, "ratio": round(trip.ratio, 3),
                      "max_ratio": trip.max_ratio, "window_s": round(trip.window_s, 1),
                      "reasons": " | ".join(trip.reasons)})
        self._read_at = float("-inf")  # record it in the same step

    def poll(self, now: float, *, force: bool = False) -> None:
        """About once a second: record our trip; adopt another bridge's; resume when an operator
        removed it; remove one decided under other settings (the operator restarted us so)."""
        if self.records is None or (not force and now - self._read_at < self.POLL_S):
            return
        self._read_at = now
        try:
            if self._unrecorded is not None:
                self.records.write(self._unrecorded)
                self._unrecorded = None
                return
            record = self.records.read()
            if record is not None and self.stop is None:
                if record.settings in (self.settings, ""):  # "": written by hand; honoured
                    self.stop = record.reason
                    log.error("dead-letter guard stop in force: not consuming until `aggregator bridge resume`",
                              extra={"reason": record.reason, "since": record.at, "by": record.by})
                else:
                    self.records.clear()
                    log.warning("dead-letter guard stop lifted: this bridge runs with other settings", extra={
                        "was": record.settings, "now": self.settings, "reason": record.reason})
            elif record is None and self.stop is not None:
                self.guard.reset()
                self.stop = None
                log.warning("dead-letter guard stop lifted by an operator: consuming again")
        except Exception as error:  # Redis down: the stop (or its absence) stays as it is
            log.warning("dead-letter guard record unreadable", extra={"error": str(error)[:200]})
