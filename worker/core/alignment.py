"""What "the events of a span" and "a window" mean, to the second, for every store (pure).

Both stores implement this one definition (docs/trends.md, "Whole seconds"), so the same
events give the same trend rows in either. A run's ``now`` is a whole second, an event
counts at its whole second ``t = floor(τ)`` of its stored time ``τ``, the span is
``now − span <= t <= now`` and window ``k`` back from ``now`` holds the ages
``[k·w, (k+1)·w)``. As ``t >= a ⟺ τ >= a`` and ``t <= b ⟺ τ < b + 1 s`` for whole
seconds, each is a half-open range of ``τ`` a time index answers: the span is
``[now − span, now + 1 s)`` (:func:`span_range`), the series ``[now − windows·w + 1 s,
now + 1 s)`` cut every ``w`` (:func:`series_range`).
"""

from __future__ import annotations

from worker.core.durations import Duration

NS_PER_S = 1_000_000_000


def run_time_ns(ns: int) -> int:
    """A run's ``now``: the whole second at or before ``ns``."""
    return ns - ns % NS_PER_S


def event_second_ns(time_ns: int) -> int:
    """The whole second an event counts at (floor; also for times before 1970)."""
    return time_ns - time_ns % NS_PER_S


def check_now(now_ns: int) -> None:
    if now_ns % NS_PER_S:
        raise ValueError(f"a trend run's time must be a whole second (run_time_ns), got {now_ns} ns")


def age_s(now_ns: int, time_ns: int) -> int:
    """An event's age in whole seconds (negative for an event after ``now``)."""
    check_now(now_ns)
    return (now_ns - event_second_ns(time_ns)) // NS_PER_S


def span_range(duration: Duration, now_ns: int) -> tuple[int, int]:
    """``[start, stop)`` on the stored time: the events that take part in a run at ``now``."""
    check_now(now_ns)
    return now_ns - duration.span_s * NS_PER_S, now_ns + NS_PER_S


def series_range(duration: Duration, now_ns: int) -> tuple[int, int, int]:
    """``(start, stop, offset)`` on the stored time: the window series is ``[start, stop)``
    cut into windows of ``duration.window_s`` seconds; ``offset`` is ``stop`` modulo the
    window width, i.e. where the windows are anchored on the epoch (Flux's
    ``aggregateWindow(offset:)``)."""
    check_now(now_ns)
    width = duration.window_s * NS_PER_S
    stop = now_ns + NS_PER_S
    return stop - duration.windows * width, stop, stop % width


def window_back(duration: Duration, now_ns: int, time_ns: int) -> int | None:
    """How many windows back from ``now`` an event falls (0 = the window ending at ``now``),
    or ``None`` when it is outside the series (older than ``windows`` windows, or after
    ``now``)."""
    age = age_s(now_ns, time_ns)
    if age < 0:
        return None
    back = age // duration.window_s
    return back if back < duration.windows else None


def in_span(duration: Duration, now_ns: int, time_ns: int) -> bool:
    """Whether an event takes part in a run at ``now``."""
    return 0 <= age_s(now_ns, time_ns) <= duration.span_s
