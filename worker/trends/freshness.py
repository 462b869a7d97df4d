"""When a duration's trend is stale: pure arithmetic over its schedule and the time limits.

A duration's rows are fresh while its last finalized run is younger than two periods plus
what one run may take (the start offset, the plan's and the finalize's time limits): one
missed tick is tolerated (a run skipped behind its predecessor, a restart), two are not.
``aggregator health trends`` and the metrics read it; the alert rules use the same bound.
A duration that never finalized is stale only once the product has been running longer
than its bound (a fresh deployment waits a day for its first `year`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from worker.config.settings import Settings
from worker.core.cron import min_period_s
from worker.core.durations import Duration


def stale_after(duration: Duration, settings: Settings) -> timedelta:
    """The age past which ``duration``'s last finalized run means the trend is stale."""
    return timedelta(seconds=2 * min_period_s(duration.schedule) + settings.trend_start_offset_s
                     + settings.task_time_limit_trend_run_s + settings.task_time_limit_finalize_s)


@dataclass(frozen=True)
class Freshness:
    duration: str
    bound: timedelta
    last_finalized: datetime | None
    running_since: datetime | None  # the first run of any duration: how long the product has run
    now: datetime

    @property
    def age(self) -> timedelta | None:
        return None if self.last_finalized is None else self.now - self.last_finalized

    @property
    def stale(self) -> bool:
        if self.age is not None:
            return self.age > self.bound
        return self.running_since is not None and self.now - self.running_since > self.bound

    def describe(self) -> str:
        bound = _short(self.bound)
        if self.age is None:
            since = "" if self.running_since is None else f", runs since {_short(self.now - self.running_since)} ago"
            return f"never finalized (stale after {bound}{since})"
        return f"last finalized {_short(self.age)} ago (stale after {bound})"


def _short(span: timedelta) -> str:
    seconds = max(0, int(span.total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"
