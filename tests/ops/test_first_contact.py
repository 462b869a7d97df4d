"""First contact: every `aggregator` subcommand, run as a new user would, against services
that are absent (a closed port) or silent (a socket that accepts and never answers), with
each kind of bad setting and bad argument.

Each run must end with the documented exit code (69 a service did not answer, 78 bad
configuration, 2 bad command line), in a few lines, without "Traceback", without the
password, and within a bound set by ``CONNECT_TIMEOUT_S``: nothing waits for ever.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.devstack.services import free_port

pytestmark = pytest.mark.e2e

AGGREGATOR = [sys.executable, "-m", "worker.ops.cli"]
PASSWORD = "hunter2-s3cret"
TIMEOUT_S = 2
# Process start-up (~1 s on this machine) plus a few timeouts: a command may try a service
# more than once (e.g. Celery's broker connection), but never for long.
BOUND_S = 5 * TIMEOUT_S + 5


@dataclass
class Outcome:
    code: int
    lines: list[str]
    seconds: float

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def run(args: list[str], **env: str) -> Outcome:
    """`aggregator ARGS` in a clean environment (no product variable leaks in from outside)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES", "REDIS", "KAFKA", "INFLUX",
                                                                       "X_", "EVENT_", "TREND", "BRIDGE"))}
    started = time.monotonic()
    done = subprocess.run([*AGGREGATOR, *args], env={**base, "CONNECT_TIMEOUT_S": str(TIMEOUT_S), **env},
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return Outcome(done.returncode, lines, seconds)


def assert_operator_grade(outcome: Outcome, code: int, max_lines: int = 3) -> None:
    shown = f"exit {outcome.code} after {outcome.seconds:.1f}s:\n{outcome.text}"
    assert outcome.code == code, shown
    assert len(outcome.lines) <= max_lines, shown
    assert "Traceback" not in outcome.text, shown
    assert PASSWORD not in outcome.text, shown
    assert outcome.seconds < BOUND_S, shown


class SilentServer:
    """Accepts connections and never answers: what a hung service looks like."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._held.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture(scope="module")
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def services_at(port_pg: int, port_redis: int, port_kafka: int) -> dict[str, str]:
    return {
        "POSTGRES_DSN": f"postgresql://aggregator:{PASSWORD}@127.0.0.1:{port_pg}/aggregator",
        "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port_redis}/0",
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port_kafka}",
    }


# Every subcommand that talks to a service, and the service it reaches first.
COMMANDS = {
    "setup": (["setup"], "PostgreSQL"),
    "bridge": (["bridge"], "Kafka"),
    "bridge resume": (["bridge", "resume"], "Redis"),
    "dlq list": (["dlq", "list"], "Kafka"),
    "dlq replay": (["dlq", "replay"], "Redis"),
    "dlq replay --dry-run": (["dlq", "replay", "--dry-run"], "Kafka"),
    "dlq show": (["dlq", "show", "0@0"], "Kafka"),
    "dlq discard": (["dlq", "discard", "0@0", "--reason", "test"], "Kafka"),
    "produce-demo": (["produce-demo", "--events", "3"], "Kafka"),
    "trends run": (["trends", "run", "currently"], "Redis"),
    "post": (["post", "--dry-run"], "PostgreSQL"),
    "maintain": (["maintain", "--dry-run"], "PostgreSQL"),
    "selftest": (["selftest"], "PostgreSQL"),
}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_absent_services(name: str) -> None:
    closed = free_port()
    args, service = COMMANDS[name]
    outcome = run(args, **services_at(closed, closed, closed))
    assert_operator_grade(outcome, 69)
    assert outcome.lines[0].startswith(f"aggregator {name.split(' --')[0]}: {service} at "), outcome.text
    assert f":{closed}" in outcome.lines[0], "the message names the address"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_silent_services(name: str, silent: SilentServer) -> None:
    args, service = COMMANDS[name]
    outcome = run(args, **services_at(silent.port, silent.port, silent.port))
    assert_operator_grade(outcome, 69)
    assert outcome.lines[0].startswith(f"aggregator {name.split(' --')[0]}: {service} at "), outcome.text


@pytest.mark.parametrize("state", ["absent", "silent"])
def test_health_reports_each_dependency_in_one_line(state: str, silent: SilentServer) -> None:
    port = free_port() if state == "absent" else silent.port
    outcome = run(["health", "worker"], **services_at(port, port, port))
    assert_operator_grade(outcome, 69, max_lines=5)
    assert all(line.startswith(("FAIL", "ok")) for line in outcome.lines), outcome.text


BAD_SETTINGS = [
    ({"REDIS_URL": "nonsense"}, "REDIS_URL='nonsense'"),
    ({"REDIS_URL": f"redis://:{PASSWORD}@host:99999/0"}, "REDIS_URL='redis://:***@host:99999/0'"),
    ({"POSTGRES_DSN": f"host=db password={PASSWORD} port=abc"}, "POSTGRES_DSN='host=db password=*** port=abc'"),
    ({"POSTGRES_DSN": "mysql://db/x"}, "POSTGRES_DSN="),
    ({"KAFKA_BOOTSTRAP_SERVERS": "kafka"}, "KAFKA_BOOTSTRAP_SERVERS='kafka'"),
    ({"INGEST_RATE_LIMIT": "fast"}, "INGEST_RATE_LIMIT='fast'"),
    ({"BRIDGE_QUEUE_LOW_WATERMARK": "500"}, "BRIDGE_QUEUE_LOW_WATERMARK (500) must be below"),
    ({"BRIDGE_MIN_BATCH": "10", "BRIDGE_MAX_BATCH": "5"}, "BRIDGE_MIN_BATCH (10) must not exceed"),
    ({"EVENT_STORE": "influxdb"}, "EVENT_STORE=influxdb needs INFLUXDB_V2_URL, INFLUXDB_V2_TOKEN"),
    ({"EVENT_STORE": "mongodb"}, "EVENT_STORE='mongodb'"),
    ({"EVENT_STORE": "influxdb", "INFLUXDB_V2_URL": "http://127.0.0.1:1", "INFLUXDB_V2_TOKEN": PASSWORD,
      "INFLUXDB_V2_RETENTION_DAYS": "30"}, "INFLUXDB_V2_RETENTION_DAYS=30 keeps the raw events shorter"),
    ({"TREND_DURATIONS": '{"hourly": {}}'}, "unknown duration 'hourly'"),
    ({"TREND_DURATIONS": '{"today": {"min_events": "many"}}'}, "must be int"),
    ({"POST_SCHEDULE": "61 * * * *"}, "POST_SCHEDULE='61 * * * *'"),
    ({"EVENT_RETENTION_DAYS": "30"}, "EVENT_RETENTION_DAYS (30) must cover the longest trend span"),
    ({"TREND_HISTORY_FULL_DAYS": "90"}, "TREND_HISTORY_FULL_DAYS (90) <= TREND_HISTORY_HOURLY_DAYS (35)"),
    ({"VISIBILITY_TIMEOUT_S": "20"}, "must be below VISIBILITY_TIMEOUT_S (20)"),
    ({"CONNECT_TIMEOUT_S": "0"}, "CONNECT_TIMEOUT_S='0'"),
    ({"TREND_QUERY_CONNECTIONS": "0"}, "TREND_QUERY_CONNECTIONS='0'"),
    ({"DLQ_MAX_ATTEMPTS": "0"}, "DLQ_MAX_ATTEMPTS='0'"),
]


@pytest.mark.parametrize(("env", "named"), BAD_SETTINGS, ids=[next(iter(e)) for e, _ in BAD_SETTINGS])
def test_bad_setting_is_named_at_start(env: dict[str, str], named: str) -> None:
    outcome = run(["trends", "run", "currently"], **env)
    assert_operator_grade(outcome, 78)
    assert outcome.lines[0].startswith("aggregator trends run: invalid configuration: "), outcome.text
    assert named in outcome.lines[0], outcome.text


@pytest.mark.parametrize("args", [[*a] for a, _ in COMMANDS.values()] + [["health", "beat"]],
                         ids=[*COMMANDS, "health"])
def test_every_subcommand_validates_settings_first(args: list[str]) -> None:
    outcome = run(args, REDIS_URL="nonsense")
    assert_operator_grade(outcome, 78)


@pytest.mark.parametrize("args", [
    ["trends", "run", "today", "--at", "yesterday"],
    ["trends", "run", "hourly"],
    ["maintain", "--at", "tomorrow"],
    ["dlq", "list", "--limit", "-1"],
    ["dlq", "show", "zero"],
    ["dlq", "discard", "0@1"],
    ["dlq", "replay", "--offsets", "0@9-2"],
    ["dlq", "replay", "--reason-kind", "typo"],
    ["produce-demo", "--events", "x"],
    ["dev", "--events", "0"],
    ["health", "kitchen"],
    ["frobnicate"],
])
def test_bad_argument_is_a_usage_error(args: list[str]) -> None:
    outcome = run(args)
    assert_operator_grade(outcome, 2)
    assert outcome.lines[0].startswith("usage: aggregator"), outcome.text


def test_setup_refuses_placeholder_secrets_unless_told() -> None:
    closed = free_port()
    env = {**services_at(closed, closed, closed), "FLOWER_BASIC_AUTH": "admin:change-me-flower",
           "GRAFANA_ADMIN_PASSWORD": "change-me",
           "POSTGRES_DSN": f"postgresql://aggregator:change-me-postgres@127.0.0.1:{closed}/aggregator"}
    refused = run(["setup"], **env)
    assert_operator_grade(refused, 78)
    assert "POSTGRES_DSN, FLOWER_BASIC_AUTH, GRAFANA_ADMIN_PASSWORD" in refused.lines[0], refused.text
    allowed = run(["setup", "--allow-placeholder-secrets"], **env)
    assert_operator_grade(allowed, 69)  # past the check, on to PostgreSQL, which is absent


def test_debug_shows_the_traceback() -> None:
    closed = free_port()
    outcome = run(["--debug", "setup"], **services_at(closed, closed, closed))
    assert outcome.code == 69 and "Traceback" in outcome.text
    assert PASSWORD not in outcome.lines[0]


def test_version_and_help() -> None:
    version = run(["--version"])
    assert version.code == 0 and version.lines[0].startswith("aggregator "), version.text
    helped = run(["trends", "run", "--help"])
    assert helped.code == 0
    assert "currently, today, week, month, year" in helped.text
    demo = run(["produce-demo", "--help"])
    assert "(default: 1000)" in demo.text
