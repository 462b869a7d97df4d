"""What the product's PostgreSQL role needs, checked by `aggregator setup` before it changes
anything: a missing privilege is named with the statement that grants it, not met halfway
through a migration. docs/deploying.md, "Credentials and TLS", says why each is needed.
"""

from __future__ import annotations

from typing import Any

from worker.core.failures import ConfigError

#: Created by the product (migrations, yoyo's bookkeeping): it must own them, and their partitions.
OWNED = ("discussion_event", "trending", "trending_history", "trending_staging", "trend_run", "trending_state",
         "morning_post", "dead_letter_triage", "trending_history_compaction", "trending_covid_papers",
         "event_rollup_day", "event_rollup_stale", "_yoyo_migration", "_yoyo_log", "_yoyo_version", "yoyo_lock")

#: amba's tables (SPEC §5; created by the product only when absent) and what the product does with them.
UPSTREAM = {"publication": ("SELECT", "REFERENCES"), "author": ("SELECT",), "publication_author": ("SELECT",),
            "discussion_data": ("SELECT",), "discussion_data_point": ("SELECT",)}

#: The one index the product wants on an amba table: each finalize matches DOIs on lower(doi).
PUBLICATION_INDEX = "CREATE INDEX publication_doi_lower ON publication (lower(doi))"

_NOT_MINE = "NOT pg_has_role(current_user, c.relowner, 'USAGE')"


def missing(cur: Any) -> list[str]:
    """The statements a superuser (or the objects' owner) must run first; empty when none."""
    cur.execute("SELECT quote_ident(current_user), quote_ident(current_schema()), quote_ident(current_database()), "
                "has_schema_privilege(current_schema(), 'USAGE') AND has_schema_privilege(current_schema(), 'CREATE'), "
                "has_database_privilege(current_database(), 'TEMPORARY')")
    role, schema, database, may_create, may_stage = cur.fetchone()
    # TEMPORARY: ingest stages each batch in a temporary table (worker/store/postgres/copy.py).
    needed = [] if may_stage else [f"GRANT TEMPORARY ON DATABASE {database} TO {role};"]
    needed += [] if may_create else [f"GRANT USAGE, CREATE ON SCHEMA {schema} TO {role};"]
    cur.execute(
        "SELECT c.relname, c.relkind = 'm' FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        f"AND {_NOT_MINE} AND (c.relname = ANY(%(owned)s) OR c.oid IN (SELECT i.inhrelid FROM pg_inherits i "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = ANY(%(owned)s))) ORDER BY c.relname",
        {"owned": list(OWNED)})
    needed += [f"ALTER {'MATERIALIZED VIEW' if view else 'TABLE'} {name} OWNER TO {role};"
               for name, view in cur.fetchall()]
    cur.execute(
        "SELECT c.relname, EXISTS (SELECT 1 FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "                          WHERE x.indrelid = c.oid AND i.relname = 'publication_doi_lower') "
        f"FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%(names)s) "
        f"AND {_NOT_MINE} ORDER BY array_position(%(names)s, c.relname::text)", {"names": list(UPSTREAM)})
    grants: dict[str, list[str]] = {}  # one GRANT per set of privileges
    index = []
    for table, indexed in cur.fetchall():
        if privileges := [p for p in UPSTREAM[table] if not _has(cur, table, p)]:
            grants.setdefault(", ".join(privileges), []).append(table)
        if table == "publication" and not indexed:
            index = [f"{PUBLICATION_INDEX};"]
    return needed + [f"GRANT {p} ON {', '.join(tables)} TO {role};" for p, tables in grants.items()] + index


def _has(cur: Any, table: str, privilege: str) -> bool:
    cur.execute("SELECT has_table_privilege(%s, %s)", (table, privilege))
    return bool(cur.fetchone()[0])


def check(conn: Any) -> None:
    """Raise :class:`ConfigError` naming every missing privilege and the SQL that grants it."""
    with conn.cursor() as cur:
        needed = missing(cur)
    conn.rollback()
    if needed:
        raise ConfigError(
            "the PostgreSQL role of POSTGRES_DSN lacks what setup needs; as a superuser run:\n    "
            + "\n    ".join(needed),
            "docs/deploying.md, 'Credentials and TLS', says why each is needed.")
