"""Token-bucket arithmetic in integers (micro-tokens, microseconds), pure: the reference the
Lua script of :mod:`worker.ingest.write_limit` is tested against, and the bucket a worker
uses alone while Redis does not answer. Integers with floored refills give the same answer
in Lua's and Python's doubles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: A token in micro-tokens.
UNIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Bucket:
    """The bucket's state: ``micro_tokens`` left at ``at_us`` (microseconds)."""

    micro_tokens: int
    at_us: int


@dataclass(frozen=True, slots=True)
class Take:
    """The answer to one take: the new state, and 0 (granted) or the microseconds to wait."""

    state: Bucket
    wait_us: int


def capacity_units(capacity: float) -> int:
    return math.floor(capacity * UNIT)


def take(state: Bucket | None, now_us: int, rate: float, capacity: float) -> Take:
    """Take one token at ``now_us``; ``state`` None is a full bucket (never used, or expired).

    A clock that goes backwards refills nothing (the state keeps the later time), so a
    caller's late answer cannot mint tokens.
    """
    if rate <= 0 or capacity < 1:
        raise ValueError(f"a bucket needs rate > 0 and capacity >= 1 (rate {rate}, capacity {capacity})")
    cap = capacity_units(capacity)
    if state is None:
        tokens, at = cap, now_us
    else:
        elapsed = max(0, now_us - state.at_us)
        tokens = min(cap, state.micro_tokens + math.floor(elapsed * rate))
        at = max(state.at_us, now_us)
    if tokens >= UNIT:
        return Take(Bucket(tokens - UNIT, at), 0)
    return Take(Bucket(tokens, at), math.ceil((UNIT - tokens) / rate))


def idle_expiry_ms(rate: float, capacity: float) -> int:
    """After this long untouched the bucket is full again, so its state may be forgotten
    (the Redis key expires): a forgotten bucket and a full one answer alike. A minute at least."""
    return max(60_000, math.ceil(capacity / rate * 1000) + 1000)
