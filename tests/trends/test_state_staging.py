"""Staging a chunk's rows (``PostgresRunState.stage_rows``) against real PostgreSQL: every value
read back exactly, a redelivered chunk idempotent, the kept connection surviving a restart."""

from __future__ import annotations

import math

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.devstack.services import PostgresServer
from worker.trends.math import TREND_COLUMNS
from worker.trends.state import PostgresRunState

pytestmark = pytest.mark.integration

#: One run state per database, as a worker process keeps one (and with it one staging connection).
_STATES: dict[str, PostgresRunState] = {}


def stage_rows(dsn: str, run_id: str, rows: list[dict[str, object]]) -> int:
    return _STATES.setdefault(dsn, PostgresRunState(dsn)).stage_rows(run_id, rows)


FLOATS = [name for name in TREND_COLUMNS if name not in ("count", "mk_trend")]


def row(doi: str, value: float = 1.5, count: int = 12, mk_trend: str = "increasing") -> dict[str, object]:
    return {"doi": doi, **dict.fromkeys(FLOATS, value), "count": count, "mk_trend": mk_trend}


def staged(dsn: str, run_id: str) -> list[tuple]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT publication_doi, {', '.join(TREND_COLUMNS)} FROM trending_staging "
                    "WHERE run_id = %s ORDER BY publication_doi", (run_id,))
        return cur.fetchall()


def expected(rows: list[dict[str, object]]) -> list[tuple]:
    return sorted((r["doi"], *(r[name] for name in TREND_COLUMNS)) for r in rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dois=st.lists(st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]),
                             min_size=1, max_size=30), min_size=1, max_size=20, unique=True),
       value=st.floats(allow_nan=False, allow_infinity=False, width=64),
       count=st.integers(0, 2**31 - 1))
def test_every_value_reads_back_exactly(pg_dsn: str, dois: list[str], value: float, count: int) -> None:
    """Any DOI text (tabs, backslashes, newlines: COPY's specials) and any finite double."""
    rows = [row(doi, value, count, mk_trend="no\ttrend\\") for doi in dois]
    assert stage_rows(pg_dsn, "run-exact", rows) == len(rows)
    found = staged(pg_dsn, "run-exact")
    assert found == expected(rows)
    assert all(math.copysign(1, v) == math.copysign(1, value) for r in found for v in r[1:2])
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM trending_staging WHERE run_id = 'run-exact'")


def test_a_redelivered_chunk_rewrites_its_rows_and_leaves_the_others(pg_dsn: str) -> None:
    first = [row(f"10.1101/a{i}") for i in range(5)]
    second = [row(f"10.1101/b{i}") for i in range(5)]
    stage_rows(pg_dsn, "run-again", first)
    stage_rows(pg_dsn, "run-again", second)
    again = [row(str(r["doi"]), value=2.5) for r in first]  # the chunk computed again, later
    stage_rows(pg_dsn, "run-again", again)
    assert staged(pg_dsn, "run-again") == expected(again + second)


def test_the_kept_connection_survives_a_postgresql_restart(own_pg: PostgresServer) -> None:
    stage_rows(own_pg.dsn, "run-restart", [row("10.1101/before")])
    own_pg.stop()
    own_pg.start()
    stage_rows(own_pg.dsn, "run-restart", [row("10.1101/after")])  # the dead connection is replaced
    assert [r[0] for r in staged(own_pg.dsn, "run-restart")] == ["10.1101/after", "10.1101/before"]


def test_a_refused_row_fails_the_chunk_and_stages_nothing(pg_dsn: str) -> None:
    """The transaction rolls back as a whole, and the kept connection stays usable."""
    with pytest.raises(psycopg2.DataError):
        stage_rows(pg_dsn, "run-refused", [row("10.1101/ok"), row("10.1101/big", count=2**40)])
    assert staged(pg_dsn, "run-refused") == []
    stage_rows(pg_dsn, "run-refused", [row("10.1101/ok")])
    assert [r[0] for r in staged(pg_dsn, "run-refused")] == ["10.1101/ok"]
