"""DDL on the time partitions: create, drop, swap in a thinned copy, never blocking readers.

Create: ``CREATE TABLE`` then ``ATTACH PARTITION`` (``SHARE UPDATE EXCLUSIVE``), creators
serialised by an advisory lock. Drop: ``DETACH … CONCURRENTLY`` then ``DROP``; an interrupted
detach is finished with ``FINALIZE``. Swap: the thinned copy is built beside the partition;
only the exchange takes ``ACCESS EXCLUSIVE``, briefly, and is abandoned if rows arrived.
A lock not obtained within ``lock_timeout`` raises ``LockNotAvailable``: callers retry later
rather than queue, where they would block everyone behind them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg2 import sql
from psycopg2.extensions import connection as Connection

from worker.core.partitions import Layout, Range

log = logging.getLogger(__name__)

#: How long a partition step waits for a lock before giving up (and retrying later).
LOCK_TIMEOUT = "2s"
#: Creating a partition on demand may wait a little longer: a writer needs it now.
CREATE_LOCK_TIMEOUT = "5s"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    range: Range


def attached(cur: Any, layout: Layout) -> list[Partition]:
    """The product-named partitions of ``layout.table``, oldest first (one attached by hand
    is not listed, so nothing here touches it)."""
    cur.execute("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = %s::regclass", (layout.table,))
    return _parsed(cur, layout)


def detached(cur: Any, layout: Layout) -> list[Partition]:
    """Tables named like this layout's partitions that are no longer attached: left by a
    drop interrupted between its detach and its ``DROP TABLE``."""
    cur.execute("SELECT c.relname FROM pg_class c WHERE c.relkind = 'r' AND NOT c.relispartition "
                "AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = %s::regclass) "
                "AND c.relname LIKE %s", (layout.table, f"{layout.table}\\_p%"))
    return _parsed(cur, layout)


def _parsed(cur: Any, layout: Layout) -> list[Partition]:
    named = ((name, layout.parse(name)) for (name,) in cur.fetchall())
    return sorted((Partition(name, part) for name, part in named if part is not None), key=lambda p: p.range)


@contextmanager
def _session_lock_timeout(conn: Connection) -> Iterator[Any]:
    """A cursor of an autocommit ``conn`` whose statements wait :data:`LOCK_TIMEOUT` at most."""
    with conn.cursor() as cur:
        cur.execute("SET lock_timeout = %s", (LOCK_TIMEOUT,))
        try:
            yield cur
        finally:
            cur.execute("RESET lock_timeout")


def drop_detached(conn: Connection, part: Partition) -> None:
    """Drop a table :func:`detached` listed (autocommit connection)."""
    with _session_lock_timeout(conn) as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(part.name)))


def _bound(part: Range) -> sql.Composed:
    return sql.SQL("FOR VALUES FROM ({}) TO ({})").format(sql.Literal(part.start.isoformat()),
                                                          sql.Literal(part.stop.isoformat()))


def create_missing(cur: Any, layout: Layout, ranges: Iterable[Range]) -> list[str]:
    """Create and attach the partitions of ``ranges`` that do not exist (in the caller's
    transaction, which must commit); returns the names created."""
    wanted = sorted(set(ranges))
    if not wanted:
        return []
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"aggregator.partitions.{layout.table}",))
    existing = {p.name for p in attached(cur, layout)}
    created = []
    for part in wanted:
        name = layout.name(part)
        if name in existing:
            continue
        table, parent = sql.Identifier(name), sql.Identifier(layout.table)
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)")
                    .format(table, parent))
        cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} ").format(parent, table) + _bound(part))
        created.append(name)
    if created:
        log.info("partitions created", extra={"table": layout.table, "partitions": ",".join(created)})
    return created


def ensure(conn: Connection, layout: Layout, ranges: Sequence[Range]) -> list[str]:
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = %s", (CREATE_LOCK_TIMEOUT,))
        return create_missing(cur, layout, ranges)


def detach_and_drop(conn: Connection, layout: Layout, part: Partition) -> None:
    """Remove one partition and its rows without blocking the parent's readers (``conn`` in
    autocommit mode: ``DETACH … CONCURRENTLY`` refuses a transaction block)."""
    if not conn.autocommit:
        raise ValueError("detach_and_drop needs an autocommit connection")
    table, parent = sql.Identifier(part.name), sql.Identifier(layout.table)
    with _session_lock_timeout(conn) as cur:
        cur.execute("SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = to_regclass(%s) "
                    "AND inhparent = %s::regclass", (part.name, layout.table))
        row = cur.fetchone()
        if row is not None:
            finish = sql.SQL("FINALIZE" if row[0] else "CONCURRENTLY")
            cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(parent, table, finish))
        cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))


@dataclass(frozen=True, slots=True)
class SwapResult:
    swapped: bool
    rows_before: int
    rows_after: int


def columns(cur: Any, table: str) -> list[str]:
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum", (table,))
    return [name for (name,) in cur.fetchall()]


def _index_names(cur: Any, table: str) -> dict[int, str]:
    """The indexes of a partition, keyed by the parent's (partitioned) index they belong to."""
    cur.execute("SELECT i.inhparent::oid::int, c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                "JOIN pg_inherits i ON i.inhrelid = x.indexrelid WHERE x.indrelid = %s::regclass", (table,))
    return {parent: name for parent, name in cur.fetchall()}


def swap_thinned(conn: Connection, layout: Layout, part: Partition,
                 kept: Callable[[sql.Identifier], sql.Composable],
                 on_swap: Callable[[Any, SwapResult], None] | None = None) -> SwapResult:
    """Replace a partition by a copy of the rows ``kept(source)`` selects (a ``SELECT`` of the
    parent's columns), in one transaction on ``conn``; ``swapped=False`` when rows arrived
    since the copy was made. ``on_swap(cursor, result)`` runs in the swap's transaction.
    """
    source, parent = sql.Identifier(part.name), sql.Identifier(layout.table)
    copy_name = f"{part.name}_thin"
    copy, check = sql.Identifier(copy_name), sql.Identifier(f"{part.name}_bounds")
    column = sql.Identifier(layout.column)
    with conn, conn.cursor() as cur:
        cur.execute("SET LOCAL lock_timeout = %s", (LOCK_TIMEOUT,))
        cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE "
                            "INCLUDING INDEXES)").format(copy, parent))
        names = sql.SQL(", ").join(map(sql.Identifier, columns(cur, layout.table)))
        # One statement, one snapshot: the rows counted are the rows the copy was made from.
        cur.execute(sql.SQL("WITH kept AS (INSERT INTO {copy} ({names}) SELECT {names} FROM ({kept}) k RETURNING 1) "
                            "SELECT (SELECT count(*) FROM {source}), (SELECT count(*) FROM kept)").format(
            copy=copy, names=names, kept=kept(source), source=source))
        before, after = _fetch_one(cur)
        # A CHECK constraint that implies the bounds: ATTACH then does not scan the copy
        # while it holds the parent's lock.
        cur.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} IS NOT NULL AND {} >= {} AND {} < {})").format(
            copy, check, column, column, sql.Literal(part.range.start.isoformat()), column,
            sql.Literal(part.range.stop.isoformat())))
        cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(parent))
        cur.execute(sql.SQL("SELECT count(*) FROM {}").format(source))
        (rows_now,) = _fetch_one(cur)
        if rows_now != before:
            conn.rollback()
            log.info("partition changed while it was thinned; trying again later",
                     extra={"partition": part.name, "rows_then": before, "rows_now": rows_now})
            return SwapResult(False, int(rows_now), int(rows_now))
        old_indexes = _index_names(cur, part.name)
        cur.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, source))
        cur.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} ").format(parent, copy) + _bound(part.range))
        new_indexes = _index_names(cur, copy_name)
        cur.execute(sql.SQL("DROP TABLE {}").format(source))
        cur.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(copy, source))
        cur.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(source, check))
        for parent_index, name in new_indexes.items():
            if parent_index in old_indexes:
                cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(name), sql.Identifier(old_indexes[parent_index])))
        result = SwapResult(True, int(before), int(after))
        if on_swap is not None:
            on_swap(cur, result)
    return result


def _fetch_one(cur: Any) -> tuple[Any, ...]:  # a seam: tests write a row between copy and swap
    return tuple(cur.fetchone())
