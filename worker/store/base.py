"""The event-store port: what ingestion and the trend engine need from a time-series store.

Two backends implement it (PostgreSQL and InfluxDB 2) and pass one contract test suite
(`tests/contract/`). Writes must be idempotent by event identity: the ingest queue is
at-least-once, so the same batch may arrive twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from worker.events import Point


class StoreUnavailable(RuntimeError):
    """The store could not be reached or refused the write; the caller should retry."""


class StoreRejected(RuntimeError):
    """The store refused points as invalid data; retrying the same write cannot succeed.

    ``rejected`` holds the points that were refused, so the caller can dead-letter them;
    the other points of the batch have been written. PostgreSQL bisects down to the exact
    points; InfluxDB does not say which line was wrong, so it names all points of the
    chunk the server refused.
    """

    def __init__(self, message: str, rejected: Sequence[Point] = ()) -> None:
        super().__init__(message)
        self.rejected: list[Point] = list(rejected)


@runtime_checkable
class EventStore(Protocol):
    name: str

    def setup(self) -> None:
        """Create what the store needs (idempotent; safe at every start)."""

    def write(self, points: Sequence[Point]) -> None:
        """Store the points; rewriting an already stored event changes nothing."""

    def read_events(self, doi: str, start_ns: int, stop_ns: int) -> list[Point]:
        """Events of one DOI with start_ns <= time < stop_ns, oldest first."""

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        """Number of events per DOI with start_ns <= time < stop_ns."""

    def close(self) -> None:
        """Release connections."""
