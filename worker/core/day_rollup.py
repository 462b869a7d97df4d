"""Which parts of a run's span the per-(DOI, UTC day) rollup answers exactly, pure
(docs/trends.md, "The day rollup").

A rolled-up day holds its events' sums, so a run reads it whole only where every one of
its seconds lies in the span and, for the window series, in one window; the rest of the
span (the edges) is read from the raw events. The decayed score ``Σ score·e^(g·age)`` of a
day factors as ``e^(g·(now − mid)) · Σ score·e^(−g·x)`` with ``x = t − mid`` (the second's
offset from the day's midpoint, |x| ≤ 43,200 s); the day stores ``Σ score·x^j`` for
``j ≤ TERMS`` and the run sums the series of ``e^(−g·x)``. That is exact to 1e-9 relative
while ``|g|·43,200 ≤ MAX_GX`` (the first term left out is below ``MAX_GX^6/6! ≈ 2e-11``),
which holds for `month` and `year` and not for the faster-decaying durations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from math import factorial

from worker.core import alignment
from worker.core.durations import Duration

DAY_S = 86_400
HALF_DAY_S = DAY_S // 2
TERMS = 5  # Σ score·x^j stored for j = 1..TERMS (j = 0 is sum_score)
MAX_GX = 0.05
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Cover:
    """The whole days a run reads from the rollup (with the window each falls in, 0 = the
    newest) and the ``[start, stop)`` ranges of stored time it reads raw: together exactly
    the span. A day the rollup has not caught up with is read raw too (the query's job)."""

    days: list[date]
    windows: list[int]
    raw: list[tuple[int, int]]


def serves(duration: Duration) -> bool:
    """Whether the rollup can answer this duration: windows of two days or more (a window
    then holds whole days), and a gravity slow enough for the stored series."""
    return (duration.window_s >= 2 * DAY_S and abs(duration.gravity) * HALF_DAY_S <= MAX_GX
            and abs(duration.gravity) * duration.span_s <= 700)  # the raw path's exp() floor


def decay_coefficients(gravity: float) -> list[float]:
    """``(−g)^j / j!`` for ``j = 1..TERMS``: ``Σ score·e^(−g·x) ≈ sum_score + Σ_j c_j·m_j``."""
    return [(-gravity) ** j / factorial(j) for j in range(1, TERMS + 1)]


def day_start_s(day: date) -> int:
    return (day - _EPOCH).days * DAY_S


def cover(duration: Duration, now_ns: int, *, by_window: bool) -> Cover:
    """The span at ``now_ns`` (:func:`worker.core.alignment.span_range`) as whole days and raw
    ranges; ``by_window`` keeps only days inside one window (the series needs that; the
    select of qualifying DOIs does not)."""
    start, stop = alignment.span_range(duration, now_ns)
    now_s = now_ns // alignment.NS_PER_S
    days, windows, raw = [], [], []
    edge = start  # the raw range being grown
    first = _EPOCH + timedelta(days=-(-start // alignment.NS_PER_S // DAY_S))
    for n in range((stop // alignment.NS_PER_S - day_start_s(first)) // DAY_S):
        day = first + timedelta(days=n)
        newest, oldest = now_s - (day_start_s(day) + DAY_S - 1), now_s - day_start_s(day)  # ages
        if newest < 0 or oldest > duration.span_s:
            continue
        if by_window and newest // duration.window_s != oldest // duration.window_s:
            continue
        day_ns = day_start_s(day) * alignment.NS_PER_S
        if day_ns > edge:
            raw.append((edge, day_ns))
        days.append(day)
        windows.append(oldest // duration.window_s)
        edge = day_ns + DAY_S * alignment.NS_PER_S
    if edge < stop:
        raw.append((edge, stop))
    return Cover(days, windows, raw)
