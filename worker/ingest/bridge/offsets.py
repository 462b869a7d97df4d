"""Offset bookkeeping (pure): Redis may forget a queued batch, so the commit point of a
partition is the end of its longest prefix of published spans the ingest task confirmed
stored. A span not confirmed by its deadline is read again (writes are idempotent); a sign of
life moves the deadline, each rewind doubles the partition's timeout, up to 4x
(docs/guarantees.md; dead workers' batches come back through :mod:`worker.celeryapp.liveness`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Span:
    first: int
    last: int
    published_at: float
    deadline: float
    confirmed: bool = False


class OffsetTracker:
    """Which offsets may be committed, per partition; what to read again when."""

    MAX_PATIENCE = 2  # timeout x 2**2 at most

    def __init__(self, confirm_timeout_s: float) -> None:
        if confirm_timeout_s <= 0:
            raise ValueError("confirm_timeout_s must be > 0")
        self.confirm_timeout_s = confirm_timeout_s
        self._spans: dict[int, deque[Span]] = {}
        self._patience: dict[int, int] = {}
        self._commit: dict[int, int] = {}  # partition -> next offset to commit, not yet handed out

    def timeout(self, partition: int) -> float:
        return self.confirm_timeout_s * (1 << self._patience.get(partition, 0))

    def track(self, partition: int, first: int, last: int, now: float, *, confirmed: bool = False) -> None:
        """Offsets first..last of ``partition`` were published (``confirmed``: dead letters only)."""
        if last < first:
            raise ValueError(f"span {first}..{last} is empty")
        spans = self._spans.setdefault(partition, deque())
        if spans and first <= spans[-1].last:
            raise ValueError(f"span {first}..{last} of partition {partition} overlaps {spans[-1].last}")
        spans.append(Span(first, last, now, now + self.timeout(partition), confirmed))
        self._advance(partition)

    def confirm(self, partition: int, first: int, last: int) -> int:
        """Offsets first..last are in the store; returns how many spans that confirmed."""
        confirmed = 0
        for span in self._spans.get(partition, ()):
            if not span.confirmed and first <= span.first and span.last <= last:
                span.confirmed = True
                confirmed += 1
        if confirmed:
            self._patience.pop(partition, None)
            self._advance(partition)
        return confirmed

    def alive(self, partition: int, first: int, last: int, now: float) -> None:
        """A sign of life for offsets first..last (a task started, or waits for the store)."""
        for span in self._spans.get(partition, ()):
            if not span.confirmed and first <= span.first and span.last <= last:
                span.deadline = max(span.deadline, now + self.timeout(partition))

    def _advance(self, partition: int) -> None:
        spans = self._spans[partition]
        moved = None
        while spans and spans[0].confirmed:
            moved = spans.popleft().last + 1
        if moved is not None:
            self._commit[partition] = moved

    def commit_points(self) -> dict[int, int]:
        """Partitions whose commit point moved since the last call -> next offset to commit."""
        points, self._commit = self._commit, {}
        return points

    def overdue(self, now: float) -> dict[int, int]:
        """Partitions whose oldest unconfirmed span is past its deadline -> its first offset."""
        late = {}
        for partition, spans in self._spans.items():
            head = next((span for span in spans if not span.confirmed), None)
            if head is not None and now >= head.deadline:
                late[partition] = head.first
        return late

    def rewind(self, partition: int) -> int | None:
        """Forget the partition's spans (they will be read again, confirmed ones behind the first
        unconfirmed too); the offset to read from, None when nothing was unconfirmed."""
        spans = self._spans.pop(partition, deque())
        head = next((span for span in spans if not span.confirmed), None)
        if head is None:
            return None
        self._patience[partition] = min(self._patience.get(partition, 0) + 1, self.MAX_PATIENCE)
        return head.first

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions this bridge no longer owns (rebalance): their next owner re-reads."""
        for partition in partitions:
            self._spans.pop(partition, None)
            self._patience.pop(partition, None)
            self._commit.pop(partition, None)

    def in_flight(self) -> int:
        """Unconfirmed spans: published batches whose events may not be stored yet."""
        return sum(not span.confirmed for spans in self._spans.values() for span in spans)

    def pending_partitions(self) -> list[int]:
        return [partition for partition, spans in self._spans.items() if any(not s.confirmed for s in spans)]

    def oldest_unconfirmed_age(self, now: float) -> float:
        """Seconds the oldest unconfirmed span has waited (0 when none): a metric."""
        waits = [now - span.published_at for spans in self._spans.values() for span in spans if not span.confirmed]
        return max(waits, default=0.0)
