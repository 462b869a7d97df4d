"""Partition the two tables that grow for ever: events by month, trend history by day.

``discussion_event`` (every event) and ``trending_history`` (every run's rows) only ever
grew: after a year, 2.8 GB of events and some 74 million history rows. Range partitions on
time let the maintenance task (``aggregator maintain``, :mod:`worker.maintenance`) remove
old data by dropping whole partitions and thin old history one day at a time
(:mod:`worker.core.partitions` says why months and days).

For each of the two tables, when it is not partitioned yet (any database that applied
0001-0004), in this migration's one transaction:

1. the table is renamed ``<table>_unpartitioned`` (with its indexes), and the partitioned
   table is created with the same columns (``LIKE``: types, defaults, ``NOT NULL``);
2. its keys and indexes:

   * ``discussion_event``: primary key ``(event_id, time)``. A unique key on a partitioned
     table must include the partition key, so the key is the event's identity *and* time;
     a redelivered event carries both unchanged and is still written once
     (``ON CONFLICT (event_id, time) DO NOTHING`` in the store). ``(doi, time) INCLUDE
     (score, sentiment_raw, followers, contains_abstract_raw, length, questions,
     exclamations, bot_rating)``: the trend queries read everything they aggregate from
     this index (index-only scans) instead of fetching one heap page per event, the
     largest part of the ``year`` run's time (``bench/year_scale.py``). ``(time)`` as
     before, for the short spans' selection;
   * ``trending_history``: the same primary key ``(duration, calculated_at,
     publication_doi)`` (it already holds the partition key) and the index
     ``(publication_doi, duration, calculated_at)`` that charts one DOI over time;

3. a partition for every month (day) that holds rows, the rows moved over (``INSERT …
   SELECT``; about 150,000 events a second here), and the old table dropped. The table is
   locked meanwhile: run setup before the new workers start (README, "Upgrading");
   ingest batches of old workers wait or retry, nothing is lost. It needs free disk space
   for one copy of the table.

It also creates ``trending_history_compaction``: the resolution each history day was
thinned to.

A database created fresh takes the same path with empty tables. The step checks whether
each table is partitioned already, so running it again changes nothing.
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

_EVENT_COVERED = ("score", "sentiment_raw", "followers", "contains_abstract_raw", "length", "questions",
                  "exclamations", "bot_rating")

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
