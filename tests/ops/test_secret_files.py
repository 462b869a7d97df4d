"""`aggregator setup` and a Celery worker run with every secret given as a file, none in the environment.

As compose runs them (Docker secrets mounted as files, read through ``<NAME>_FILE``), against
a PostgreSQL that *requires* a password: a cluster of the test's own whose pg_hba.conf asks
TCP clients for scram-sha-256, with a role whose password is only in a file. The DSN in the
environment has no password (``POSTGRES_PASSWORD_FILE`` gives it), Redis's URL and the X and
InfluxDB credentials come from files too. Setup migrates and passes its self-test, the worker
stores an ingest batch; no secret value appears in either process's environment or output.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.support.devstack.services import KafkaBroker, PostgresServer, _pg_bin
from tests.support.helpers import AGGREGATOR, count_events, log_text, start_worker, wait_for
from tests.support.sample_points import make_point
from worker.config.settings import Settings

pytestmark = pytest.mark.e2e


@dataclass
class PasswordPostgres:
    server: PostgresServer
    role: str
    password: str
    database: str

    @property
    def dsn_without_password(self) -> str:
        return f"postgresql://{self.role}@127.0.0.1:{self.server.port}/{self.database}"

    @property
    def admin_dsn(self) -> str:
        return self.server.dsn_for(self.database)


def _refuses_without_password(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=2).close()
    except psycopg2.OperationalError as error:
        return "password" in str(error)
    return False


@pytest.fixture
def password_pg() -> Iterator[PasswordPostgres]:
    """A cluster of the test's own where TCP logins need their password (the shared one trusts)."""
    workdir = Path(tempfile.mkdtemp(prefix="agg-pw-pg-"))
    workdir.chmod(0o755)  # the `postgres` user enters it when the tests run as root
    server = PostgresServer(workdir).start()
    try:
        role, password, database = "product", f"pg-{uuid.uuid4().hex}", "product"
        conn = psycopg2.connect(server.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE ROLE {role} LOGIN PASSWORD %s", (password,))
            cur.execute(f"CREATE DATABASE {database} OWNER {role}")
        conn.close()
        hba = server.datadir / "pg_hba.conf"
        hba.write_text("local all all trust\n"
                       "host all all 127.0.0.1/32 scram-sha-256\n"
                       "host all all ::1/128 scram-sha-256\n")
        subprocess.run(server._as_owner([_pg_bin("pg_ctl"), "-D", str(server.datadir), "reload"]), check=True,
                       capture_output=True)
        pg = PasswordPostgres(server, role, password, database)
        # The reload is a signal: await the server asking for the password.
        wait_for(lambda: _refuses_without_password(pg.dsn_without_password), 30, "pg_hba.conf requiring passwords")
        yield pg
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the test process's own leaks into the children (spawn copies os.environ)."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(f"{name.upper()}_FILE", raising=False)


def test_setup_and_a_worker_start_with_secrets_only_in_files(
        password_pg: PasswordPostgres, redis_url: str, kafka: KafkaBroker, topics: dict[str, str], spawn,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clean_environment(monkeypatch)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    secrets = {
        "POSTGRES_PASSWORD": password_pg.password,
        "REDIS_URL": redis_url,
        "INFLUXDB_V2_TOKEN": f"influx-{uuid.uuid4().hex}",
        "X_CONSUMER_KEY": f"xck-{uuid.uuid4().hex}",
        "X_CONSUMER_SECRET": f"xcs-{uuid.uuid4().hex}",
        "X_ACCESS_TOKEN": f"xat-{uuid.uuid4().hex}",
        "X_ACCESS_TOKEN_SECRET": f"xas-{uuid.uuid4().hex}",
    }
    env = {
        "POSTGRES_DSN": password_pg.dsn_without_password,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KAFKA_TOPIC": topics["topic"],
        "KAFKA_DLQ_TOPIC": topics["dlq"],
        "KAFKA_GROUP_ID": topics["group"],
        "EVENT_STORE": "postgres",
        "INGEST_RATE_LIMIT": "1000/s",
    }
    for variable, value in secrets.items():
        path = secrets_dir / variable.lower()
        path.write_text(value + "\n")
        env[f"{variable}_FILE"] = str(path)
    hidden = [secrets[name] for name in secrets if name != "REDIS_URL"]  # the test Redis has no password
    child_environment = {**os.environ, **env}
    for value in hidden:
        assert value not in "\n".join(f"{k}={v}" for k, v in child_environment.items())

    setup = subprocess.run([*AGGREGATOR, "setup"], env=child_environment, capture_output=True, text=True,
                           timeout=180, check=False)
    output = setup.stdout + setup.stderr
    assert setup.returncode == 0, output[-3000:]
    assert "setup done" in output and "selftest passed" in output
    for value in hidden:
        assert value not in output, "a secret in setup's output"

    worker = start_worker(spawn, env, queue="ingest", name="secrets")
    from worker.app import app
    from worker.ingest.publisher import IngestPublisher

    IngestPublisher(app, "ingest").publish([make_point("secret-files-1"), make_point("secret-files-2")],
                                           f"ingest:secret-files:{uuid.uuid4().hex[:8]}")
    wait_for(lambda: count_events(password_pg.admin_dsn) == 2 or worker.poll() is not None, 60,
             "the worker storing the batch in the password-protected PostgreSQL")
    assert count_events(password_pg.admin_dsn) == 2, log_text(worker)[-3000:]

    environ = Path(f"/proc/{worker.pid}/environ").read_bytes().decode(errors="replace")
    log = log_text(worker)
    for value in hidden:
        assert value not in environ, "a secret in the worker's environment"
        assert value not in log, "a secret in the worker's output"
    assert f"POSTGRES_PASSWORD_FILE={secrets_dir / 'postgres_password'}" in environ.split("\0")


def test_a_wrong_password_file_is_a_configuration_error_that_shows_no_password(
        password_pg: PasswordPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused login is a setting to fix (exit 78, the login named), not a service to wait
    for (69); neither the wrong password nor the right one appears in the message."""
    _clean_environment(monkeypatch)
    wrong = f"wrong-{uuid.uuid4().hex}"
    path = tmp_path / "postgres_password"
    path.write_text(wrong + "\n")
    env = {**os.environ, "POSTGRES_DSN": password_pg.dsn_without_password, "POSTGRES_PASSWORD_FILE": str(path)}
    setup = subprocess.run([*AGGREGATOR, "setup"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    output = setup.stdout + setup.stderr
    assert setup.returncode == 78, output[-3000:]
    assert "refused the login" in output
    assert wrong not in output and password_pg.password not in output

    del env["POSTGRES_PASSWORD_FILE"]  # no password at all: the same, not "did not answer"
    setup = subprocess.run([*AGGREGATOR, "setup"], env=env, capture_output=True, text=True, timeout=120,
                           check=False)
    output = setup.stdout + setup.stderr
    assert setup.returncode == 78, output[-3000:]
    assert "refused the login" in output and "POSTGRES_PASSWORD_FILE" in output
