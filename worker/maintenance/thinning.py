"""Which history rows a thinned day keeps: per (DOI, duration) and UTC hour or day, the row
with the latest ``calculated_at`` (run inside :func:`worker.db.partition_admin.swap_thinned`)."""

from __future__ import annotations

from collections.abc import Callable

from psycopg2 import sql

from worker.core.retention import Level


def kept_rows(level: Level) -> Callable[[sql.Identifier], sql.Composable]:
    """A ``SELECT`` over a history partition that returns the rows ``level`` keeps."""
    bucket = sql.SQL("date_trunc({}, calculated_at, 'UTC')").format(sql.Literal(level.bucket))

    def select(source: sql.Identifier) -> sql.Composable:
        return sql.SQL("SELECT DISTINCT ON (publication_doi, duration, {bucket}) * FROM {source} "
                       "ORDER BY publication_doi, duration, {bucket}, calculated_at DESC").format(
            bucket=bucket, source=source)

    return select
