"""What "the events of a span" and "a window" mean, to the second, for every store (pure).

Both stores compute the trend inputs in their databases (SQL in ``postgres.py``, Flux in
``flux.py``); this module is the one definition they implement, so the same events give
the same trend rows whichever store holds them, window edges and span ends included.

Whole seconds
-------------
The upstream timestamps carry whole seconds (SPEC §2), and the stores keep sub-second
parts differently: PostgreSQL keeps the microseconds it was given, InfluxDB replaces them
with a per-event hash offset so that two events of one DOI in one second stay two points
(:func:`worker.store.influx.lineprotocol.event_timestamp_ns`). Deciding span and window membership
on the stored time would therefore differ between the stores for every event in the
second that holds an edge. So:

* a run's time ``now`` is a whole second (:func:`run_time_ns` floors it, and the store
  functions refuse anything else);
* an event counts at its whole second ``t = floor(τ)``, whatever the stored sub-second
  part of its time ``τ``;
* the span is ``now − span <= t <= now`` (SPEC §4, both ends inclusive), an event's age is
  ``now − t`` (a whole number of seconds), and window ``k`` back from ``now`` holds the ages
  in ``[k·w, (k+1)·w)`` (series position ``windows − 1 − k``; ``worker.trends.math``).

On the stored time, for whole seconds ``a`` and ``b``: ``t >= a ⟺ τ >= a`` and
``t <= b ⟺ τ < b + 1 s``. Every condition above is thus a half-open range of ``τ`` that
starts and ends on whole seconds, which both databases answer from their time index:

* span: ``[now − span, now + 1 s)`` (:func:`span_range`);
* window ``k``: ``[now − (k+1)·w + 1 s, now − k·w + 1 s)``, i.e. the series is
  ``[now − windows·w + 1 s, now + 1 s)`` cut every ``w`` (:func:`series_range`).
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
