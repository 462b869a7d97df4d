"""The five trend durations (SPEC §3) with the source aggregator's values, pure.

Every consumer reads the table from ``Settings.durations()`` (``TREND_DURATIONS`` applied),
so an override applies everywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta


@dataclass(frozen=True, slots=True)
class Duration:
    name: str
    span_s: int  # events in [now - span, now] take part
    gravity: float  # 1/s, negative: newer events weigh more
    window_s: int  # width of one window of the window series
    windows: int  # windows in the series
    min_events: int  # a DOI takes part only with MORE than this many events in the span
    schedule: str  # UTC cron of the run

    def __post_init__(self) -> None:
        if self.span_s <= 0 or self.window_s <= 0 or self.windows <= 0:
            raise ValueError(f"duration {self.name!r}: span, window and windows must be > 0")
        if self.gravity >= 0:
            raise ValueError(f"duration {self.name!r}: gravity must be negative")
        if self.min_events < 0:
            raise ValueError(f"duration {self.name!r}: min_events must be >= 0")
        if len(self.schedule.split()) != 5:
            raise ValueError(f"duration {self.name!r}: schedule must be a 5-field cron")

    @property
    def span(self) -> timedelta:
        return timedelta(seconds=self.span_s)


# What an override may put in each field (JSON numbers: a float gravity may be written 0).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "span_s": (int,), "gravity": (float, int), "window_s": (int,), "windows": (int,), "min_events": (int,),
    "schedule": (str,),
}

_H = 3600
DEFAULT_DURATIONS: tuple[Duration, ...] = (
    Duration("currently", 6 * _H, -0.00036, 6 * 60, 60, 10, "*/3 * * * *"),
    Duration("today", 24 * _H, -0.000025, 24 * 60, 60, 30, "1-59/10 * * * *"),
    Duration("week", 7 * 24 * _H, -0.00000357142857, 168 * 60, 60, 30, "25 * * * *"),
    Duration("month", 30 * 24 * _H, -0.000000833333333, 12 * _H, 60, 30, "5 */3 * * *"),
    Duration("year", 365 * 24 * _H, -0.000000833333333, 146 * _H, 60, 30, "4 2 * * *"),
)


def build_durations(overrides_json: str = "{}") -> dict[str, Duration]:
    """The table with operator overrides applied.

    ``overrides_json`` maps a duration name to the fields to change, e.g.
    ``{"currently": {"min_events": 5}}``. Unknown names or fields are errors, not ignored:
    a typo in an override must not silently leave the default in force.
    """
    table = {d.name: d for d in DEFAULT_DURATIONS}
    try:
        overrides = json.loads(overrides_json or "{}")
    except json.JSONDecodeError as error:
        raise ValueError(f"TREND_DURATIONS is not valid JSON: {error}") from None
    if not isinstance(overrides, Mapping):
        raise ValueError("TREND_DURATIONS must be a JSON object of duration name -> fields")
    for name, changes in overrides.items():
        if name not in table:
            raise ValueError(f"TREND_DURATIONS: unknown duration {name!r} (known: {sorted(table)})")
        if not isinstance(changes, Mapping):
            raise ValueError(f"TREND_DURATIONS[{name!r}] must be an object")
        if unknown := set(changes) - _FIELD_TYPES.keys():
            raise ValueError(f"TREND_DURATIONS[{name!r}]: unknown fields {sorted(unknown)}")
        for key, value in changes.items():
            expected = _FIELD_TYPES[key]
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ValueError(f"TREND_DURATIONS[{name!r}][{key!r}] must be "
                                 f"{' or '.join(t.__name__ for t in expected)}, not {value!r}")
        table[name] = replace(table[name], **changes)
    return table

