"""The event-store port: what ingestion and the trend engine need from a time-series store.

PostgreSQL and InfluxDB 2 implement it and pass one contract suite
(``tests/store/test_*_contract.py``). Writes are idempotent by event identity (the ingest
queue is at-least-once); trend inputs are computed in the store's database, to the
definitions of :mod:`worker.core.alignment`, so both stores give the same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from worker.core.aggregates import Aggregates, TrendRow
from worker.core.durations import Duration
from worker.core.events import Point

__all__ = ["Aggregates", "EventStore", "StoreRejected", "StoreUnavailable", "TrendRow"]


class StoreUnavailable(RuntimeError):
    """The store could not be reached or refused the write; the caller should retry."""


class StoreRejected(RuntimeError):
    """The store refused points as invalid data; retrying the same write cannot succeed.

    ``rejected`` holds the points that were refused, so the caller can dead-letter them;
    the other points of the batch have been written. PostgreSQL bisects down to the exact
    points; InfluxDB does not say which line was wrong, so it names all points of the
    chunk the server refused.
    """

    def __init__(self, message: str, rejected: Sequence[Point] = (), conflicts: int = 0) -> None:
        super().__init__(message)
        self.rejected: list[Point] = list(rejected)
        self.conflicts = conflicts


@runtime_checkable
class EventStore(Protocol):
    name: str
    #: Whether :meth:`write_trend_history` keeps anything. The finalize step reads a run's
    #: rows back only for such a store: for a year run that is 19,000 rows, a quarter of a
    #: second, for nothing when PostgreSQL's ``trending_history`` is the record.
    keeps_trend_history: bool

    def setup(self) -> None:
        """Create what the store needs (idempotent; safe at every start)."""

    def write(self, points: Sequence[Point]) -> int | None:
        """Store the points; rewriting an already stored event changes nothing.

        Returns how many points reused a stored event's id with other content (they are
        not stored, and the caller logs them), or None when the store cannot tell.
        """

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        """Number of events per DOI with start_ns <= time < stop_ns."""

    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        """DOIs with MORE than ``duration.min_events`` events in the span ending at
        ``now_ns`` (:func:`worker.core.alignment.span_range`), sorted."""

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        """The :class:`Aggregates` of ``dois`` (in that order) at ``now_ns``; a DOI
        without events in the span gets zeros."""

    def write_trend_history(self, duration: str, calculated_at_ns: int, rows: Sequence[TrendRow]) -> None:
        """Keep a published run's rows where this store's readers look for them (InfluxDB:
        the ``trending_<duration>`` bucket the streams API reads). A store whose history
        is PostgreSQL's ``trending_history`` (written by the finalize step) does nothing."""

    def close(self) -> None:
        """Release connections."""
