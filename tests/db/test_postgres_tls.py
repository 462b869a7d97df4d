"""The product reaches PostgreSQL over TLS with ``sslmode=verify-full`` and a CA file, from the DSN alone.

A cluster of the test's own with ``ssl=on`` and a certificate for ``localhost`` signed by a CA
made here (``openssl``), whose pg_hba.conf takes TCP clients only over TLS (``hostssl``).
`aggregator setup` (settings validation, the privilege check, yoyo's migrations) and a product
connection work with the CA in the DSN; a CA that did not sign the certificate, a host the
certificate does not name, and a client without TLS are each refused; the masked DSN keeps
``sslmode`` and ``sslrootcert`` and hides the password.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import product_env
from tests.support.devstack.services import KafkaBroker, PostgresServer
from tests.support.helpers import AGGREGATOR, q
from worker.config.settings import Settings
from worker.core.masking import mask_dsn
from worker.db.connection import Database

pytestmark = pytest.mark.e2e


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=directory)


@pytest.fixture
def tls_pg() -> Iterator[tuple[PostgresServer, Path]]:
    workdir = Path(tempfile.mkdtemp(prefix="agg-tls-pg-"))
    workdir.chmod(0o755)  # the `postgres` user enters it when the tests run as root
    certs = workdir / "certs"
    certs.mkdir()
    make_ca(certs, "ca")
    make_ca(certs, "other-ca")
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=certs)
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=certs)
    for name in ("server.key", "server.crt"):  # PostgreSQL refuses a key others may read
        shutil.chown(certs / name, "postgres", "postgres")
        (certs / name).chmod(0o600)
    certs.chmod(0o755)
    server = PostgresServer(workdir, settings=("ssl=on", f"ssl_cert_file={certs / 'server.crt'}",
                                               f"ssl_key_file={certs / 'server.key'}"))
    server.init()
    (server.datadir / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    server.start()
    yield server, certs
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def dsn(server: PostgresServer, ca: Path, host: str = "localhost") -> str:
    return (f"postgresql://{server.user}:{server.password}@{host}:{server.port}/{server.database}"
            f"?sslmode=verify-full&sslrootcert={ca}")


def refusal(dsn: str) -> str:
    with pytest.raises(psycopg2.OperationalError) as refused:
        psycopg2.connect(dsn, connect_timeout=5).close()
    return str(refused.value)


def test_setup_and_connections_verify_the_servers_certificate(
        tls_pg: tuple[PostgresServer, Path], kafka: KafkaBroker, topics: dict[str, str]) -> None:
    server, certs = tls_pg
    verified = dsn(server, certs / "ca.crt")
    env = {"POSTGRES_DSN": verified, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "KAFKA_TOPIC": topics["topic"],
           "KAFKA_DLQ_TOPIC": topics["dlq"], "EVENT_STORE": "postgres"}
    done = subprocess.run([*AGGREGATOR, "setup", "--no-selftest"], env=product_env(env), capture_output=True,
                          text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert q(verified, "SELECT count(*) FROM _yoyo_migration") != [(0,)]

    database = Database.from_settings(Settings(postgres_dsn=verified))
    conn = database.connect()
    with conn.cursor() as cur:
        cur.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        assert cur.fetchone() == (True,)
    conn.close()
    assert mask_dsn(verified) == verified.replace(f":{server.password}@", ":***@")

    assert "certificate verify failed" in refusal(dsn(server, certs / "other-ca.crt"))
    assert 'does not match host name "127.0.0.1"' in refusal(dsn(server, certs / "ca.crt", host="127.0.0.1"))
    assert "no encryption" in refusal(verified.replace("sslmode=verify-full", "sslmode=disable"))
