"""Adopt the `trending` table of a running amba system, whichever side created it.

amba's components run amba-event-stream's ``create_all`` at start, so ``trending`` is amba's
shape (``id bigserial`` key, no key per publication and duration), the product's from 0002
(key ``(publication_doi, duration)``, no ``id``), or already converged. This step brings any
of them to one shape amba's ORM and the product both use: columns are only added or widened,
never renamed or dropped. docs/amba.md, "PostgreSQL", lists the shape and why; every
statement is conditional or idempotent. ``trending`` holds only the latest run's rows, so the
rows removed to satisfy the keys are recomputed by the next run.
"""

from __future__ import annotations

from typing import Any

from yoyo import step

__depends__ = {"0003.morning-post"}

#: Columns the product writes that amba's model lacks, with their types.
PRODUCT_COLUMNS = (
    ("mk_trend", "text"),
    ("mk_p", "double precision"),
    ("run_id", "text"),
    ("calculated_at", "timestamptz"),
)

TRENDING_COVID_PAPERS = """
CREATE MATERIALIZED VIEW trending_covid_papers AS
WITH ranked_entity AS (
    SELECT ddp.publication_doi, dd.value,
           row_number() OVER (PARTITION BY ddp.publication_doi
                              ORDER BY ddp.count DESC NULLS LAST, dd.value) AS entity_rank
    FROM discussion_data_point ddp
    JOIN discussion_data dd ON dd.id = ddp.discussion_data_point_id
    WHERE dd.type = 'entity'
),
covid AS (
    SELECT DISTINCT publication_doi FROM ranked_entity
    WHERE entity_rank <= 3 AND value LIKE '%COVID-19%'
)
SELECT row_number() OVER (PARTITION BY t.duration
                          ORDER BY t.score DESC NULLS LAST, t.publication_doi) AS trending_ranking,
       p.doi, p.pub_date, p.year, p.citation_count, p.title, p.id AS publication_id,
       t.*
FROM trending t
JOIN publication p ON p.doi = t.publication_doi
JOIN covid c ON c.publication_doi = t.publication_doi
WITH DATA
"""


def _one(cursor: Any, sql: str, params: tuple[object, ...] = ()) -> Any:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return None if row is None else row[0]


def _column_type(cursor: Any, column: str) -> str | None:
    found: str | None = _one(
        cursor,
        "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
        "WHERE a.attrelid = 'trending'::regclass AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        (column,),
    )
    return found


def _primary_key(cursor: Any) -> tuple[str | None, list[str]]:
    """Name and columns of trending's primary key (``(None, [])`` when it has none)."""
    cursor.execute(
        "SELECT c.conname, array_agg(a.attname ORDER BY k.ord) FROM pg_constraint c "
        "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
        "WHERE c.conrelid = 'trending'::regclass AND c.contype = 'p' GROUP BY c.conname"
    )
    row = cursor.fetchone()
    return (None, []) if row is None else (row[0], list(row[1]))


def _has_publication_key(cursor: Any) -> bool:
    """Whether a foreign key from trending(publication_doi) to publication(doi) exists."""
    return bool(_one(
        cursor,
        "SELECT count(*) FROM pg_constraint c "
        "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ALL (c.conkey) "
        "JOIN pg_attribute r ON r.attrelid = c.confrelid AND r.attnum = ALL (c.confkey) "
        "WHERE c.contype = 'f' AND c.conrelid = 'trending'::regclass "
        "AND c.confrelid = 'publication'::regclass "
        "AND a.attname = 'publication_doi' AND r.attname = 'doi'",
    ))


def adopt_trending(conn: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("DROP MATERIALIZED VIEW IF EXISTS trending_covid_papers")

    for name, sql_type in PRODUCT_COLUMNS:
        cursor.execute(f"ALTER TABLE trending ADD COLUMN IF NOT EXISTS {name} {sql_type}")
    if _column_type(cursor, "sum_followers") != "bigint":
        cursor.execute("ALTER TABLE trending ALTER COLUMN sum_followers TYPE bigint "
                       "USING round(sum_followers)::bigint")

    if _column_type(cursor, "id") is None:
        cursor.execute("ALTER TABLE trending ADD COLUMN id bigserial")
    key_name, key_columns = _primary_key(cursor)
    if key_columns != ["id"]:
        if key_name is not None:
            cursor.execute(f'ALTER TABLE trending DROP CONSTRAINT "{key_name}"')
        cursor.execute("ALTER TABLE trending ADD CONSTRAINT trending_pkey PRIMARY KEY (id)")

    # Each row names its publication in the publication's spelling; rows that cannot go.
    cursor.execute("""
        UPDATE trending t SET publication_doi = m.doi
        FROM (SELECT DISTINCT ON (lower(doi)) lower(doi) AS key, doi FROM publication
              ORDER BY lower(doi), doi) m
        WHERE lower(t.publication_doi) = m.key
          AND NOT EXISTS (SELECT 1 FROM publication p WHERE p.doi = t.publication_doi)
    """)
    cursor.execute("""
        DELETE FROM trending t
        WHERE t.publication_doi IS NULL OR t.duration IS NULL
           OR NOT EXISTS (SELECT 1 FROM publication p WHERE p.doi = t.publication_doi)
    """)
    cursor.execute("""
        DELETE FROM trending a USING trending b
        WHERE a.publication_doi = b.publication_doi AND a.duration = b.duration AND a.id < b.id
    """)
    cursor.execute("ALTER TABLE trending ALTER COLUMN publication_doi SET NOT NULL, "
                   "ALTER COLUMN duration SET NOT NULL")
    cursor.execute("CREATE UNIQUE INDEX IF NOT EXISTS trending_publication_duration "
                   "ON trending (publication_doi, duration)")
    cursor.execute("CREATE INDEX IF NOT EXISTS trending_duration_score ON trending (duration, score DESC)")
    if not _has_publication_key(cursor):
        cursor.execute("ALTER TABLE trending ADD CONSTRAINT trending_publication_doi_fkey "
                       "FOREIGN KEY (publication_doi) REFERENCES publication (doi)")

    # Only an owner may run CREATE INDEX, even one that exists: amba's owner may have made it
    # (worker/db/privileges.py asks for it when the product does not own publication).
    if _one(cursor, "SELECT to_regclass('publication_doi_lower')") is None:
        cursor.execute("CREATE INDEX publication_doi_lower ON publication (lower(doi))")
    cursor.execute("ALTER TABLE trend_run ADD COLUMN IF NOT EXISTS rows_without_publication integer, "
                   "ADD COLUMN IF NOT EXISTS rows_duplicate_publication integer")

    cursor.execute(TRENDING_COVID_PAPERS)
    # Unique index: required by REFRESH MATERIALIZED VIEW CONCURRENTLY.
    cursor.execute("CREATE UNIQUE INDEX trending_covid_papers_key ON trending_covid_papers (publication_doi, duration)")
    cursor.execute("CREATE INDEX trending_covid_papers_rank ON trending_covid_papers (duration, trending_ranking)")
    cursor.close()


steps = [step(adopt_trending)]
