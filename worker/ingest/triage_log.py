"""The dead-letter triage log (table ``dead_letter_triage``): the replay cursor only says
"everything before this offset is done", but a filtered replay, a discard or a parked letter
resolves letters after a pending one, so each resolution is appended here (who, when, why).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from psycopg2.extras import execute_values

from worker.db.connection import Cursor, Database
from worker.ingest.triage import Position, State


@dataclass(frozen=True)
class Entry:
    """One row of the log: what was done to the letter at ``position``, by whom and why."""

    position: Position
    state: State
    actor: str
    why: str
    reason_kind: str
    attempt: int
    record: bytes | None = None  # the record as it was on the topic (parked, discarded)


@dataclass(frozen=True)
class Resolution:
    """A position's latest entry, as `dlq list --all` and `dlq show` print it."""

    state: State
    actor: str
    at: datetime
    why: str


#: Each position's latest row, of one topic (``{join}`` narrows the positions read).
_LATEST = ("SELECT DISTINCT ON (kafka_partition, kafka_offset) kafka_partition, kafka_offset, state, actor, at, why "
           "FROM dead_letter_triage{join} WHERE topic = %s ORDER BY kafka_partition, kafka_offset, id DESC")
#: Narrows the positions to the (partition, offset) arrays passed, ``{op}`` comparing the offsets.
_POSITIONS = " JOIN unnest(%s::int[], %s::bigint[]) AS s(p, o) ON kafka_partition = s.p AND kafka_offset {op} s.o"


class TriageLog:
    """The log of one dead-letter topic; a short connection per call (a command makes two or three)."""

    def __init__(self, database: Database, topic: str) -> None:
        self._database = database
        self.topic = topic

    @contextmanager
    def _cursor(self) -> Iterator[Cursor]:
        conn = self._database.connect(application_name="aggregator-dlq")
        try:
            with conn, conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def states(self, since: Mapping[int, int] | None = None) -> dict[Position, Resolution]:
        """The latest entry of each position; with ``since`` (the replay cursor), only at or after
        it: the log of a long-lived topic is far longer than what is pending."""
        if not since:
            return self._latest("", [])
        return self._latest(_POSITIONS.format(op=">="), [list(since), list(since.values())])

    def states_of(self, positions: Sequence[Position]) -> dict[Position, Resolution]:
        """The latest entry of just these positions (`dlq show`, `dlq discard`)."""
        return self._latest(_POSITIONS.format(op="="),
                            [[w.partition for w in positions], [w.offset for w in positions]])

    def _latest(self, join: str, params: list[object]) -> dict[Position, Resolution]:
        with self._cursor() as cur:
            cur.execute(_LATEST.format(join=join), [*params, self.topic])
            rows = cur.fetchall()
        return {Position(p, o): Resolution(State(state), actor, at, why) for p, o, state, actor, at, why in rows}

    def parked_from(self) -> dict[int, int]:
        """Per partition, the first offset whose latest state is parked (where a replay that
        includes parked letters must start reading, behind the cursor)."""
        with self._cursor() as cur:
            cur.execute(f"SELECT kafka_partition, min(kafka_offset) FROM ({_LATEST.format(join='')}) latest "
                        "WHERE state = 'parked' GROUP BY kafka_partition", (self.topic,))
            return {int(p): int(o) for p, o in cur.fetchall()}

    def record(self, entries: Sequence[Entry]) -> None:
        """Append entries in one transaction: all of them or none."""
        if not entries:
            return
        with self._cursor() as cur:
            execute_values(
                cur, "INSERT INTO dead_letter_triage (topic, kafka_partition, kafka_offset, state, actor, why, "
                     "reason_kind, attempt, record) VALUES %s",
                [(self.topic, e.position.partition, e.position.offset, e.state.value, e.actor, e.why,
                  e.reason_kind, e.attempt, e.record) for e in entries], page_size=1000)
