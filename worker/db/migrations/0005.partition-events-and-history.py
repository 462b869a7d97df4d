"""Partition the two tables that grow for ever: events by month, trend history by day.

Each table not partitioned yet is renamed ``<table>_unpartitioned``, its partitioned successor
created with the same columns, keys and indexes (:data:`_KEYS`), a partition made for every
month (day) that holds rows, the rows copied and the old table dropped, in one transaction
that locks the table (docs/operating.md, "Migration 0005"; :mod:`worker.core.partitions`
says why months and days). A partitioned table is left alone, so a second run changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from yoyo import step

from worker.core.partitions import EVENTS, HISTORY, Layout
from worker.core.progress import Progress
from worker.db import partition_admin

log = logging.getLogger("worker.db.migrations")

#: The copy goes in this many ranges of the old table's blocks, each a Tid Range Scan (the
#: same sequential read as one statement), so `setup` can say how far it is: ~70 s per 10M
#: events on the benchmark machine, long enough to wonder.
_COPY_PARTS = 20

__depends__ = {"0004.adopt-amba-trending"}

#: Everything the trend queries aggregate, so they read the (doi, time) index alone
#: (index-only scans) instead of one heap page per event (``bench/year_scale.py``).
_EVENT_COVERED = ("score", "sentiment_raw", "followers", "contains_abstract_raw", "length", "questions",
                  "exclamations", "bot_rating")

#: A unique key of a partitioned table must hold the partition key: an event's key is its id
#: *and* time, which a redelivered event carries unchanged (written once, ON CONFLICT).
_KEYS = {
    EVENTS.table: [
        "ALTER TABLE discussion_event ADD CONSTRAINT discussion_event_pkey PRIMARY KEY (event_id, time)",
        "CREATE INDEX discussion_event_doi_time ON discussion_event (doi, time) "
        f"INCLUDE ({', '.join(_EVENT_COVERED)})",
        "CREATE INDEX discussion_event_time ON discussion_event (time)",
    ],
    HISTORY.table: [
        "ALTER TABLE trending_history ADD CONSTRAINT trending_history_pkey "
        "PRIMARY KEY (duration, calculated_at, publication_doi)",
        "CREATE INDEX trending_history_doi ON trending_history (publication_doi, duration, calculated_at)",
    ],
}


def _is_partitioned(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (table,))
    row = cursor.fetchone()
    return row is not None and row[0] == "p"


def _rename_with_indexes(cursor: Any, table: str, new_name: str) -> None:
    """Rename a table and its indexes (index names are per schema: the new ones take them)."""
    cursor.execute("SELECT c.relname FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
                   "WHERE x.indrelid = %s::regclass", (table,))
    for (index,) in cursor.fetchall():
        cursor.execute(f'ALTER INDEX "{index}" RENAME TO "{index.replace(table, new_name, 1)}"')
    cursor.execute(f'ALTER TABLE "{table}" RENAME TO "{new_name}"')


def _partition(cursor: Any, layout: Layout) -> None:
    if _is_partitioned(cursor, layout.table):
        return
    old = f"{layout.table}_unpartitioned"
    _rename_with_indexes(cursor, layout.table, old)
    cursor.execute(f'CREATE TABLE "{layout.table}" (LIKE "{old}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS '
                   f'INCLUDING STORAGE) PARTITION BY RANGE ("{layout.column}")')
    for statement in _KEYS[layout.table]:
        cursor.execute(statement)
    log.info("migration 0005: finding the days that hold rows of %s", layout.table)
    cursor.execute(f'SELECT DISTINCT ("{layout.column}" AT TIME ZONE \'UTC\')::date FROM "{old}"')
    days = [day for (day,) in cursor.fetchall()]
    partition_admin.create_missing(cursor, layout, layout.ranges_of_days(days))
    columns = ", ".join(f'"{name}"' for name in partition_admin.columns(cursor, old))
    _copy(cursor, layout.table, old, columns)
    cursor.execute(f'DROP TABLE "{old}"')


def _copy(cursor: Any, table: str, old: str, columns: str) -> None:
    """Every row of ``old`` into ``table``, block range by block range, with progress lines."""
    cursor.execute("SELECT pg_relation_size(%s) / current_setting('block_size')::bigint", (old,))
    (blocks,) = cursor.fetchone()
    step_blocks = max(1, -(-int(blocks) // _COPY_PARTS))
    progress = Progress(f"migration 0005: {table} copied (blocks)", int(blocks),
                        lambda line: log.info("%s", line.strip()), terminal=False, every_s=5.0)
    for start in range(0, int(blocks), step_blocks):
        # The table is locked (renamed in this transaction): no row can land past `blocks`.
        cursor.execute(f'INSERT INTO "{table}" ({columns}) SELECT {columns} FROM "{old}" '
                       "WHERE ctid >= %s::tid AND ctid < %s::tid", (f"({start},0)", f"({start + step_blocks},0)"))
        progress.advance(min(step_blocks, int(blocks) - start))
    progress.finish()


def partition_tables(conn: Any) -> None:
    cursor = conn.cursor()
    for layout in (EVENTS, HISTORY):
        _partition(cursor, layout)
    cursor.execute("""
        CREATE TABLE IF NOT EXISTS trending_history_compaction (
            day          date PRIMARY KEY,
            level        text NOT NULL CHECK (level IN ('hourly', 'daily')),
            rows_before  bigint NOT NULL,
            rows_after   bigint NOT NULL,
            compacted_at timestamptz NOT NULL DEFAULT now()
        )
    """)
    cursor.execute("COMMENT ON TABLE trending_history_compaction IS "
                   "'The resolution each trending_history day was thinned to by aggregator maintain; "
                   "a day without a row keeps every run.'")
    cursor.close()


steps = [step(partition_tables)]
