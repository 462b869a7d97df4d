"""The dead-letter-rate guard (pure): when a stream turns mostly invalid, stop instead of
dead-lettering all of it. The window is the last N events, not T seconds (an operator
replays a number of events); a ratio over it also catches a stream where every other event
is invalid, which a count of consecutive ones misses. Each offset counts once; 1.0 is off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Trip:
    """Why the guard tripped, for the log line, the metric and ``aggregator health``."""

    invalid: int
    window: int
    max_ratio: float
    window_s: float  # seconds between the oldest and the newest event of the window
    at: float  # clock time of the event that tripped it
    reasons: tuple[str, ...]  # the latest distinct reasons, newest last

    @property
    def ratio(self) -> float:
        return self.invalid / self.window

    def describe(self) -> str:
        return (f"{self.invalid} of the last {self.window} events were dead-lettered ({self.ratio:.0%} > "
                f"BRIDGE_MAX_DLQ_RATIO {self.max_ratio:g}, over {self.window_s:.1f} s); latest reasons: "
                + "; ".join(self.reasons))


class DlqGuard:
    """Feed it every event the bridge takes; ``tripped`` says when to stop consuming."""

    REASONS_KEPT = 3

    def __init__(self, max_ratio: float, window: int) -> None:
        if not 0 < max_ratio <= 1:
            raise ValueError("max_ratio must be in (0, 1]")
        if window < 1:
            raise ValueError("window must be >= 1")
        self.max_ratio = max_ratio
        self.window = window
        self._events: deque[tuple[bool, float]] = deque()  # (invalid, time), oldest first
        self._invalid = 0
        self._counted: dict[int, int] = {}  # partition -> highest offset counted
        self._reasons: deque[str] = deque(maxlen=self.REASONS_KEPT)  # the oldest drops out
        self.tripped: Trip | None = None

    @property
    def enabled(self) -> bool:
        return self.max_ratio < 1

    def observe(self, partition: int, offset: int, now: float, reason: str | None = None) -> Trip | None:
        """One event taken: valid (``reason`` None) or dead-lettered. Returns the trip when this
        event tripped the guard; once tripped, nothing is counted until :meth:`reset`."""
        if self.tripped is not None or offset <= self._counted.get(partition, -1):
            return None
        self._counted[partition] = offset
        self._events.append((reason is not None, now))
        self._invalid += reason is not None
        if reason is not None:
            short = reason[:200]
            if short in self._reasons:
                self._reasons.remove(short)
            self._reasons.append(short)
        if len(self._events) > self.window:
            old_invalid, _ = self._events.popleft()
            self._invalid -= old_invalid
        if len(self._events) == self.window and self._invalid > self.max_ratio * self.window:
            self.tripped = Trip(self._invalid, self.window, self.max_ratio, now - self._events[0][1], now,
                                tuple(self._reasons))
            return self.tripped
        return None

    def ratio(self) -> float:
        """Invalid share of the events in the window so far (0 before any): a metric."""
        return self._invalid / len(self._events) if self._events else 0.0

    def reset(self) -> None:
        """An operator resumed: judge the stream again from an empty window. The offsets
        counted stay counted (the events after the trip were not, so they will be)."""
        self._events.clear()
        self._invalid = 0
        self._reasons.clear()
        self.tripped = None
