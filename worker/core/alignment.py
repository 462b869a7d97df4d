"""What "the events of a span" and "a window" mean, to the second, for every store (pure;
docs/trends.md, "Whole seconds"). An event counts at its whole second ``t = floor(τ)``; as
``t >= a ⟺ τ >= a`` and ``t <= b ⟺ τ < b + 1 s`` for whole seconds, the span
``now − span <= t <= now`` and window ``k``'s ages ``[k·w, (k+1)·w)`` are half-open ranges
of the stored time ``τ`` a time index answers (:func:`span_range`, :func:`series_range`).
"""

from __future__ import annotations

from worker.core.durations import Duration

NS_PER_S = 1_000_000_000


def whole_second_ns(ns: int) -> int:
    """The whole second at or before ``ns`` (also before 1970): a run's ``now``, and the
    second an event counts at."""
    return ns - ns % NS_PER_S


def check_now(now_ns: int) -> None:
    if now_ns % NS_PER_S:
        raise ValueError(f"a trend run's time must be a whole second (whole_second_ns), got {now_ns} ns")


def age_s(now_ns: int, time_ns: int) -> int:
    """An event's age in whole seconds (negative for an event after ``now``)."""
    check_now(now_ns)
    return (now_ns - whole_second_ns(time_ns)) // NS_PER_S


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
