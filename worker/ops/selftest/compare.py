"""The self-test's checks as lines (pure). Floats compare with the store contract suite's
tolerance: the stores sum in their own order, and PostgreSQL's ``exp`` is not numpy's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from worker.core.aggregates import Aggregates
from worker.trends.math import TREND_COLUMNS

RTOL = 1e-9
ATOL = 1e-6
#: Width of a check's name in its line.
NAME_WIDTH = 26

AGGREGATE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Aggregates))


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name:<{NAME_WIDTH}} {self.detail}".rstrip()


def verdict(name: str, differences: Sequence[str], detail: str) -> Check:
    """``ok`` with ``detail`` when there is no difference, else ``FAIL`` with the first one."""
    if not differences:
        return Check(name, True, detail)
    more = len(differences) - 1
    return Check(name, False, differences[0] + (f" (and {more} more difference{'s' * (more > 1)})" if more else ""))


def summary(checks: Sequence[Check]) -> str:
    failed = sum(not c.ok for c in checks)
    if not failed:
        return f"selftest passed: {len(checks)} checks"
    return f"selftest FAILED: {failed} of {len(checks)} checks"


def show(value: Any) -> str:
    """A value as the lines show it: floats in their shortest exact form (``7.5``, ``8.0``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value) if isinstance(value, float | str) else str(value)


def _same(got: Any, want: Any) -> bool:
    if isinstance(got, str) or isinstance(want, str):
        return bool(got == want)
    try:
        return bool(np.isclose(float(got), float(want), rtol=RTOL, atol=ATOL))
    except (TypeError, ValueError):
        return bool(got == want)


def _difference(doi: str, column: str, got: Any, want: Any) -> str:
    return f"{doi}: {column} {show(got)} != expected {show(want)}"


def list_differences(what: str, got: Sequence[str], want: Sequence[str]) -> list[str]:
    """``missing …`` and ``unexpected …`` items of a list of DOIs (order aside), then order."""
    found = [f"{what}: missing {item}" for item in want if item not in got]
    found += [f"{what}: unexpected {item}" for item in got if item not in want]
    if not found and list(got) != list(want):
        found.append(f"{what}: order {list(got)} != expected {list(want)}")
    return found


def count_differences(got: Mapping[str, int], want: Mapping[str, int]) -> list[str]:
    """Events per DOI: one difference per DOI whose count differs (absent counts as 0)."""
    return [_difference(doi, "events", got.get(doi, 0), want.get(doi, 0))
            for doi in sorted(set(got) | set(want)) if got.get(doi, 0) != want.get(doi, 0)]


def aggregate_differences(dois: Sequence[str], got: Aggregates, want: Aggregates) -> list[str]:
    """Every column of the trend inputs, DOI by DOI; a window of the series is ``series[j]``
    (``j`` counted from the oldest window, as the series is stored)."""
    found = []
    for column in AGGREGATE_COLUMNS:
        have, need = np.asarray(getattr(got, column)), np.asarray(getattr(want, column))
        if have.shape != need.shape:
            found.append(f"{column}: shape {have.shape} != expected {need.shape}")
            continue
        for i, doi in enumerate(dois):
            if column == "series":
                found += [_difference(doi, f"series[{j}]", have[i, j], need[i, j])
                          for j in range(need.shape[1]) if not _same(have[i, j], need[i, j])]
            elif not _same(have[i], need[i]):
                found.append(_difference(doi, column, have[i], need[i]))
    return found


def row_differences(got: Sequence[Mapping[str, Any]], want: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every column of the trend rows (:data:`~worker.trends.math.TREND_COLUMNS`), by DOI."""
    have = {str(row["doi"]): row for row in got}
    found = list_differences("rows", sorted(have), sorted(str(row["doi"]) for row in want))
    for row in want:
        doi = str(row["doi"])
        if doi not in have:
            continue
        found += [_difference(doi, column, have[doi].get(column), row[column]) for column in TREND_COLUMNS
                  if not _same(have[doi].get(column), row[column])]
    return found
