"""What the bridge's steps share: the partitions it owns, with the next offset to take of
each, and the numbers its metrics read (plain values: the metrics thread only reads them)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Partitions:
    topic: str
    owned: set[int] = field(default_factory=set)
    # partition -> next offset to take; a partition is absent until a message was taken
    next_offset: dict[int, int] = field(default_factory=dict)


@dataclass
class BridgeStats:
    consumed: int = 0
    polls: int = 0
    published_batches: int = 0
    published_events: int = 0
    dead_lettered: int = 0
    confirmed_batches: int = 0
    rewinds: int = 0
    paused: bool = False
    pauses: int = 0
    ceiling: int = 1
    rate_per_s: float = 0.0
    queue_depth: int = 0
    in_flight: int = 0
    oldest_unconfirmed_s: float = 0.0
    committed_upto: dict[int, int] = field(default_factory=dict)
    assigned: int = 0  # partitions this bridge owns now
    dlq_guard_tripped: bool = False
    dlq_ratio: float = 0.0  # invalid share of the guard's window
    dlq_guard_trips: int = 0
    # partition -> high watermark (librdkafka's cached value) - next offset to take; replaced
    # as a whole each step, so the metrics thread reads a consistent dict.
    lag: dict[int, int] = field(default_factory=dict)
