"""Real services for the tests: PostgreSQL, Redis and Kafka (Tansu), started once per session.

The environment variables are set before the Celery app is imported, so the app, the
bridge and worker subprocesses all talk to these throwaway services. Each test gets a
fresh database (cloned from a migrated template), a flushed Redis and its own topic names.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devstack.services import KafkaBroker, PostgresServer, RedisServer
from tests.support.x_recorder import x_api  # noqa: F401 - the fake X API fixture, shared by the post tests

TEMPLATE_DB = "aggregator_template"

#: The kinds of test (pyproject.toml's markers); each test is of exactly one.
KINDS = ("unit", "contract", "integration", "e2e", "faults")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test without exactly one kind: `-m unit`, `-m "not faults"` must select it
    or leave it out on purpose, never by accident."""
    wrong = [f"{item.nodeid}: {kinds or 'no kind'}" for item in items
             if len(kinds := [m.name for m in item.iter_markers() if m.name in KINDS]) != 1]
    if wrong:
        raise pytest.UsageError("every test needs exactly one kind marker "
                                f"({', '.join(KINDS)}; set pytestmark in its module):\n  " + "\n  ".join(wrong))


def _workdir(name: str) -> Path:
    # Not under pytest's 0700 tmp: the `postgres` user must be able to enter it.
    path = Path(tempfile.mkdtemp(prefix=f"agg-{name}-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer(_workdir("pg"), database=TEMPLATE_DB).start()
    from worker.db.migrate import migrate

    migrate(server.dsn)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def own_pg() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own (migrated), so stopping it disturbs nobody."""
    from worker.db.migrate import migrate

    server = PostgresServer(_workdir("own-pg")).start()
    migrate(server.dsn)
    yield server
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(_workdir("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    broker = KafkaBroker(_workdir("kafka")).start()
    yield broker
    broker.stop()


def _admin_exec(server: PostgresServer, sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(server.admin_dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


@contextlib.contextmanager
def _throwaway_database(server: PostgresServer, prefix: str, template: str) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _admin_exec(server, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield server.dsn_for(name)
    finally:
        with contextlib.suppress(Exception):
            _admin_exec(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    with _throwaway_database(pg_server, "t", TEMPLATE_DB) as dsn:
        yield dsn


@pytest.fixture
def empty_pg_dsn(pg_server: PostgresServer) -> Iterator[str]:
    """A fresh database WITHOUT the product's migrations (for setup-order tests)."""
    with _throwaway_database(pg_server, "e", "template0") as dsn:
        yield dsn


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    redis.Redis(port=redis_server.port).flushall()
    return redis_server.url


@pytest.fixture
def topics(kafka: KafkaBroker) -> dict[str, str]:
    """Unique topic and group names for one test (the broker is shared)."""
    from worker.ingest.deadletter import ensure_topic

    suffix = uuid.uuid4().hex[:8]
    names = {"topic": f"events-{suffix}", "dlq": f"events-{suffix}.dlq", "group": f"group-{suffix}"}
    ensure_topic(kafka.bootstrap, names["topic"], 2)
    ensure_topic(kafka.bootstrap, names["dlq"], 1)
    return names


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg_dsn: str, redis_url: str, kafka: KafkaBroker,
        topics: dict[str, str]) -> Iterator[dict[str, str]]:
    """The environment of a product process in this test; settings caches are reset."""
    from worker.celeryapp import resources
    from worker.config.settings import get_settings

    values = {
        "POSTGRES_DSN": pg_dsn,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "KAFKA_TOPIC": topics["topic"],
        "KAFKA_DLQ_TOPIC": topics["dlq"],
        "KAFKA_GROUP_ID": topics["group"],
        "EVENT_STORE": "postgres",
        "INGEST_RETRY_BACKOFF_S": "0.2",
        "INGEST_RETRY_BACKOFF_MAX_S": "1",
        "INGEST_RATE_LIMIT": "1000/s",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()  # the process's resources follow (worker.celeryapp.resources.for_process)
    yield values
    resources.reset()  # close what the test's tasks opened
    get_settings.cache_clear()


def product_env(extra: dict[str, str]) -> dict[str, str]:
    """Environment for a product subprocess (bridge, celery worker)."""
    env = dict(os.environ)
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[object]:
    """Start product subprocesses; every one still running is killed at the end."""
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], env: dict[str, str], name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(argv, env=product_env(env), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_path = tmp_path / f"{name}.log"  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()



@pytest.fixture(autouse=True)
def _celery_app_on_test_redis(request: pytest.FixtureRequest) -> None:
    """Point the test process's Celery app at the session Redis (when the test uses it)."""
    if "redis_url" not in request.fixturenames:
        return
    url = request.getfixturevalue("redis_url")
    from worker.app import app

    app.conf.update(broker_url=url, result_backend=url)


@pytest.fixture
def eager(env: dict[str, str]):
    """Celery tasks run in the test process (wiring tests); failure paths of chords need a
    real worker instead (eager mode runs neither callback nor errback on a failing header)."""
    from worker.app import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    yield app
    app.conf.task_always_eager = False
    app.conf.task_eager_propagates = False
