"""The backup of docs/deploying.md ("Backup and restore"), done for real: pg_dump with the
documented table list covers every table the migrations create (amba's aside), and a restore
into a fresh PostgreSQL cluster, after amba's own tables, is a deployment that `aggregator
setup` finds migrated and whose self-test passes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.compose import ROOT
from tests.support.devstack.publications import create_publications
from tests.support.devstack.services import PostgresServer, _pg_bin
from tests.support.helpers import q
from tests.support.trend_seed import seed_events
from worker.ops.demo import demo_doi
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
# amba's tables (docs/amba.md): in amba's backup, not the product's.
AMBA_TABLES = ("publication", "author", "publication_author", "discussion_data", "discussion_data_point")


def documented_tables() -> list[str]:
    """The `TABLES=(...)` of the backup command in docs/deploying.md, as the shell splits it."""
    line = next(line for line in (ROOT / "docs" / "deploying.md").read_text().splitlines()
                if line.startswith("TABLES=("))
    return shlex.split(line.removeprefix("TABLES=(").split(")")[0])


def pg(tool: str, *args: str) -> str:
    done = subprocess.run([_pg_bin(tool), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{tool}: {done.stderr}"
    return done.stdout


def relations(dsn: str) -> set[str]:
    """Tables, partitions and materialized views of the public schema."""
    rows = q(dsn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                  "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')")
    return {name for (name,) in rows}


def row_counts(dsn: str, tables: set[str]) -> dict[str, int]:
    return {table: q(dsn, f'SELECT count(*) FROM "{table}"')[0][0] for table in sorted(tables)}


@pytest.fixture
def fresh_cluster() -> Iterator[PostgresServer]:
    """A new, empty PostgreSQL cluster: a new host, or a volume that was lost."""
    workdir = Path(tempfile.mkdtemp(prefix="agg-restore-"))
    workdir.chmod(0o755)  # the `postgres` user enters it
    server = PostgresServer(workdir).start()
    yield server
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def fill_every_product_table(dsn: str) -> None:
    """A trend run on demo events (events, trend tables, the view) plus a posted morning and a
    triaged dead letter: each product table holds something a restore must bring back."""
    from worker.ops.cli import main

    dois = [demo_doi(i) for i in range(12)]
    create_publications(dsn, len(dois))
    seed_events(dsn, datetime_to_ns(NOW), {doi: 40 - i for i, doi in enumerate(dois)}, 24 * 3600)
    assert main(["trends", "run", "today", "--at", NOW.isoformat()]) == 0
    q(dsn, "INSERT INTO morning_post (day, status, text, tweet_id) VALUES ('2026-03-02', 'posted', 'top 3', '1')")
    q(dsn, "INSERT INTO dead_letter_triage (topic, kafka_partition, kafka_offset, state, actor, why, reason_kind, "
           "attempt) VALUES ('events.dlq', 0, 4, 'discarded', 'ops', 'a test event', 'invalid-json', 1)")


def test_the_backup_covers_every_product_table_and_restores_into_a_fresh_cluster(
        env: dict[str, str], fresh_cluster: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from worker.config.settings import get_settings
    from worker.ops.cli import main

    source = env["POSTGRES_DSN"]
    fill_every_product_table(source)
    product, amba = tmp_path / "aggregator.dump", tmp_path / "amba.dump"
    pg("pg_dump", "-Fc", "--no-owner", "-d", source, *documented_tables(),
       "--exclude-table-data=trending_staging", "-f", str(product))
    pg("pg_dump", "-Fc", "--no-owner", "-d", source, *(f"-t{table}" for table in AMBA_TABLES), "-f", str(amba))

    contents = pg("pg_restore", "-l", str(product))  # the dump's table of contents
    listed = set(re.findall(r"^\d+; \d+ \d+ (?:TABLE|MATERIALIZED VIEW) public (\S+) ", contents, re.M))
    assert listed == relations(source) - set(AMBA_TABLES), "a table the migrations create is missing from the backup"
    kept = listed - {"trending_staging"}
    assert all(count > 0 for table, count in row_counts(source, kept).items()
               if table in {"discussion_event", "trending", "trending_history", "trend_run", "morning_post",
                            "dead_letter_triage", "trending_covid_papers", "_yoyo_migration"})

    target = fresh_cluster.dsn
    pg("pg_restore", "--no-owner", "-d", target, str(amba))  # amba's first: trending's key and the view need it
    pg("pg_restore", "--clean", "--if-exists", "--no-owner", "-d", target, str(product))
    assert row_counts(target, kept) == row_counts(source, kept)

    monkeypatch.setenv("POSTGRES_DSN", target)
    get_settings.cache_clear()
    capsys.readouterr()
    assert main(["setup"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "migrations applied=none" in out, out
    assert out.rstrip().endswith("checks"), out
    assert "selftest passed" in out, out
