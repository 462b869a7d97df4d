"""The product runs as a role of its own, beside amba's tables, with docs/deploying.md's grants.

amba's components create their tables first, as amba's role (the database's owner, as in a
running amba system). The product's role is created with the documentation's SQL, as it is
written there (only the names made unique: roles are per cluster): `setup` stops with exit 78
and names exactly the documented grants, then passes once they are run. Then a whole day's
work as that role, through real processes: an ingest batch through a Celery worker, a trend run
through a `-c 1` trends worker (finalize, the view's refresh), `aggregator maintain` dropping
partitions; and the documented read-only role reads both tables and may write neither.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import sqlalchemy as sa
from psycopg2 import errors

from tests.conftest import product_env
from tests.db.test_amba_adoption import COVID, amba_starts, seed_publications_with_amba_orm
from tests.support.devstack.services import KafkaBroker
from tests.support.helpers import AGGREGATOR, q, start_worker, wait_for
from tests.support.sample_points import make_point
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploying.md"


def documented_sql() -> list[str]:
    """The ```sql blocks of deploying.md's "Credentials and TLS", PostgreSQL: role, grants, readers."""
    section = DOCS.read_text().split("### Credentials and TLS", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, re.S)


def statements(block: str) -> list[str]:
    return [line.split("--")[0].strip() for line in block.splitlines() if line.split("--")[0].strip()]


@pytest.fixture
def names(empty_pg_dsn: str) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    database = empty_pg_dsn.rsplit("/", 1)[1]
    yield {"trend_aggregator": f"agg_{suffix}", "trend_reader": f"reader_{suffix}",
           "streams_api": f"streams_{suffix}", "DATABASE amba": f"DATABASE {database}", "amba": f"amba_{suffix}"}


def named(sql: str, names: dict[str, str]) -> str:
    for documented, unique in names.items():
        sql = re.sub(rf"\b{documented}\b", unique, sql)
    return sql


def as_role(dsn: str, role: str) -> str:
    return re.sub(r"//[^@]*@", f"//{role}:pw@", dsn)


def setup(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*AGGREGATOR, "setup", "--no-selftest"], env=product_env(env), capture_output=True,
                          text=True, timeout=180, check=False)


def test_setup_names_the_grants_then_a_whole_run_as_a_role_of_its_own(
        empty_pg_dsn: str, names: dict[str, str], redis_url: str, kafka: KafkaBroker, topics: dict[str, str],
        spawn, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = empty_pg_dsn
    role_sql, grants_sql, reader_sql = (named(block, names) for block in documented_sql())
    # amba's system: its role owns the database and created amba's tables (and `trending`).
    q(admin, f"CREATE ROLE {names['amba']} LOGIN PASSWORD 'pw'")
    q(admin, f"ALTER {names['DATABASE amba']} OWNER TO {names['amba']}")
    amba_engine = sa.create_engine(as_role(admin, names["amba"]))
    amba_starts(amba_engine)
    seed_publications_with_amba_orm(amba_engine)
    amba_engine.dispose()

    q(admin, role_sql)
    dsn = as_role(admin, names["trend_aggregator"])
    assert q(dsn, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user") == [
        (False, False, False)]
    env = {"POSTGRES_DSN": dsn, "REDIS_URL": redis_url, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
           "KAFKA_TOPIC": topics["topic"], "KAFKA_DLQ_TOPIC": topics["dlq"], "KAFKA_GROUP_ID": topics["group"],
           "EVENT_STORE": "postgres", "INGEST_RATE_LIMIT": "1000/s"}

    # 1. Setup stops before changing anything, naming exactly the documented grants.
    refused = setup(env)
    assert refused.returncode == 78, refused.stdout + refused.stderr
    printed = [line.strip() for line in refused.stderr.splitlines()]
    for statement in statements(grants_sql):
        assert statement in printed, (statement, refused.stderr)
    assert "Traceback" not in refused.stderr
    assert q(admin, "SELECT count(*) FROM pg_tables WHERE tablename LIKE '%yoyo%'") == [(0,)]

    # 2. With them, setup passes (and again: nothing left to grant).
    q(admin, grants_sql)
    for _ in range(2):
        done = setup(env)
        assert done.returncode == 0, done.stdout + done.stderr

    # 3. Ingest through a worker: the month's event partition is created by the product's role.
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from worker.app import app
    from worker.ingest.publisher import IngestPublisher

    now = datetime.now(UTC).replace(microsecond=0)
    start_worker(spawn, env, queue="ingest", name="least-ingest")
    points = [make_point(f"lp-{i}", COVID, datetime_to_ns(now - timedelta(minutes=i + 1))) for i in range(12)]
    IngestPublisher(app, "ingest").publish(points, f"ingest:least-privilege:{uuid.uuid4().hex[:8]}")
    wait_for(lambda: q(admin, "SELECT count(*) FROM discussion_event") == [(12,)], 60, "12 events stored")

    # 4. A trend run through the trends worker: finalize, history partition, the view's refresh.
    start_worker(spawn, env, queue="trends", name="least-trends")
    app.send_task("tasks.trends.run_trend", args=("currently", now.isoformat()), queue="trends")
    wait_for(lambda: q(admin, "SELECT status, refreshed_at IS NOT NULL FROM trend_run") == [("finalized", True)],
             60, "the run finalized and the view refreshed")
    assert q(admin, "SELECT doi, duration FROM trending_covid_papers") == [(COVID, "currently")]

    # 5. Maintenance two years on drops the event and history partitions the role created.
    later = (now + timedelta(days=800)).isoformat()
    maintained = subprocess.run([*AGGREGATOR, "maintain", "--at", later], env=product_env(env),
                                capture_output=True, text=True, timeout=120, check=False)
    assert maintained.returncode == 0, maintained.stdout + maintained.stderr
    assert q(admin, "SELECT count(*) FROM discussion_event") == [(0,)]

    # 6. The read-only role: reads both tables amba's streams API reads, writes nothing.
    q(admin, reader_sql)
    reader = as_role(admin, names["streams_api"])
    assert q(reader, "SELECT count(*) FROM trending") == [(1,)]
    assert q(reader, "SELECT doi FROM trending_covid_papers") == [(COVID,)]
    with pytest.raises(errors.InsufficientPrivilege):
        q(reader, "DELETE FROM trending")
    with pytest.raises(errors.InsufficientPrivilege):
        q(reader, "REFRESH MATERIALIZED VIEW trending_covid_papers")


def test_a_deployment_that_ran_as_another_role_is_told_each_table_to_hand_over(pg_dsn: str) -> None:
    """Migrated (with partitions) by the old owner: the new role is given one ALTER per table, view and
    partition; once run, nothing is missing."""
    from worker.db import privileges
    from worker.store.postgres.store import PostgresStore

    store = PostgresStore(pg_dsn)
    store.write([make_point("old-owner", COVID, datetime_to_ns(datetime.now(UTC)))])
    store.close()
    role = f"agg_{uuid.uuid4().hex[:8]}"
    q(pg_dsn, f"CREATE ROLE {role} LOGIN; GRANT USAGE, CREATE ON SCHEMA public TO {role}")
    with psycopg2.connect(as_role(pg_dsn, role)) as conn, conn.cursor() as cur:
        needed = privileges.missing(cur)
    partitions = q(pg_dsn, "SELECT count(*) FROM pg_inherits JOIN pg_class c ON c.oid = inhrelid "
                           "WHERE c.relkind = 'r'")[0][0]
    assert partitions >= 1
    # Every table and view the migrations made is the product's or amba's: none is left behind.
    made = q(pg_dsn, "SELECT relname FROM pg_class WHERE relnamespace = current_schema()::regnamespace "
                     "AND relkind IN ('r', 'p', 'm') AND NOT relispartition")
    assert {name for (name,) in made} == set(privileges.OWNED) | set(privileges.UPSTREAM)
    # One ALTER per table, view and partition; standalone, the old owner also made amba's tables.
    assert len([s for s in needed if s.startswith("ALTER ")]) == len(privileges.OWNED) + partitions, needed
    assert f"GRANT SELECT, REFERENCES ON publication TO {role};" in needed
    assert f"ALTER MATERIALIZED VIEW trending_covid_papers OWNER TO {role};" in needed
    q(pg_dsn, "\n".join(needed))
    with psycopg2.connect(as_role(pg_dsn, role)) as conn, conn.cursor() as cur:
        assert privileges.missing(cur) == []
