"""The deployment files agree with the code: docker-compose.yml, .env.example, Dockerfile.

There is no Docker engine in CI, so these are the checks that stand in for `docker compose
up`: every command is a real entry point (an `aggregator` subcommand the parser accepts, a
Celery app that imports, queues that `celeryconfig` declares), every variable is defined,
and the rules that keep data safe are in the file (one beat, trends worker -c 1, Redis
noeviction, healthchecks and start order). A new Settings field without its line in
.env.example fails here, on purpose.
"""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

import celeryconfig
from worker.cli import make_parser
from worker.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_PATH = ROOT / "docker-compose.yml"
ENV_PATH = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?message}; `$${...}` is an escaped `$`.
_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines; surrounding quotes removed as compose does. Comments are skipped."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", stripped)
        assert match, f"{path.name}:{number}: not KEY=value: {line!r}"
        key, value = match.groups()
        assert key not in values, f"{path.name}:{number}: {key} defined twice"
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


ENV = parse_env_file(ENV_PATH)
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_PATH.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PRODUCT = {name: svc for name, svc in SERVICES.items() if "build" in svc}
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def interpolate(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        value = ENV.get(name)
        if op in (":-", "-") and not value:
            return arg
        if op in (":?", "?") and value is None:
            raise AssertionError(f"compose requires {name}: {arg}")
        return value or ""

    return _VAR.sub(replace, text).replace("$$", "$")


def argv(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    return [interpolate(str(word)) for word in words]


def option(words: list[str], *names: str) -> str | None:
    """Value of `-Q x`, `--queues=x`... in a command line."""
    for i, word in enumerate(words):
        for name in names:
            if word == name and i + 1 < len(words):
                return words[i + 1]
            if name.startswith("--") and word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


def celery_workers() -> dict[str, list[str]]:
    return {name: argv(svc) for name, svc in PRODUCT.items() if argv(svc)[:4] == ["celery", "-A", "worker.app",
                                                                                     "worker"]}


def declared_queues() -> set[str]:
    return {queue.name for queue in celeryconfig.task_queues}


def seconds(duration: str) -> float:
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration)):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


# --- commands --------------------------------------------------------------------------------
def test_product_services_are_the_expected_processes() -> None:
    assert set(PRODUCT) == {"setup", "bridge", "worker-ingest", "worker-trends", "worker-default", "beat", "flower"}
    assert {"kafka", "redis", "influxdb", "postgres"} <= set(SERVICES)


@pytest.mark.parametrize("name", sorted(PRODUCT))
def test_command_is_a_real_entry_point(name: str) -> None:
    words = argv(PRODUCT[name])
    if words[0] == "aggregator":
        make_parser().parse_args(words[1:])  # SystemExit (test error) on an unknown subcommand
        return
    assert words[:3] == ["celery", "-A", "worker.app"], words
    module = importlib.import_module("worker.app")
    assert module.app.main == "aggregator"
    assert words[3] in {"worker", "beat", "flower"}, words
    if words[3] == "worker":
        queues = (option(words, "-Q", "--queues") or "").split(",")
        assert set(queues) <= declared_queues(), f"{name} serves undeclared queues {queues}"
        assert int(option(words, "-c", "--concurrency") or "0") >= 1
        node = option(words, "-n", "--hostname") or ""
        assert node.endswith("@%h"), f"{name}: node name {node!r}: the health check pings *@<hostname>"


def test_aggregator_entry_point_is_installed() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^aggregator\s*=\s*"worker\.cli:main"', text, re.M)


def test_every_declared_queue_is_served_and_trends_alone_with_concurrency_1() -> None:
    workers = celery_workers()
    served = {q: name for name, words in workers.items() for q in (option(words, "-Q") or "").split(",")}
    assert declared_queues() <= set(served), f"queues nobody serves: {declared_queues() - set(served)}"
    trends = ENV["TRENDS_QUEUE"]
    trends_servers = [name for name, words in workers.items() if trends in (option(words, "-Q") or "").split(",")]
    assert trends_servers == ["worker-trends"], f"exactly one worker serves {trends}: {trends_servers}"
    trends_worker = workers["worker-trends"]
    assert option(trends_worker, "-Q") == trends, "the trends worker must serve only the trends queue"
    assert option(trends_worker, "-c", "--concurrency") == "1", "trend runs must never overlap"
    assert SERVICES["worker-trends"].get("deploy", {}).get("replicas", 1) == 1
    # The ingest worker serves the queue the bridge publishes to.
    assert ENV["INGEST_QUEUE"] in served


def test_exactly_one_beat_with_its_schedule_on_a_volume() -> None:
    commands = {name: argv(svc) for name, svc in SERVICES.items() if "command" in svc}
    beats = [name for name, words in commands.items() if words[:4] == ["celery", "-A", "worker.app", "beat"]]
    assert beats == ["beat"]
    embedded = [name for name, words in commands.items() if {"-B", "--beat"} & set(words)]
    assert not embedded, f"a worker with an embedded beat is a second scheduler: {embedded}"
    beat = SERVICES["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    schedule = option(argv(beat), "--schedule", "-s")
    assert schedule, "beat needs --schedule on a volume (a restarted beat must know what ran)"
    mounts = {str(volume).split(":")[1] for volume in beat.get("volumes", [])}
    assert str(Path(schedule).parent) in mounts


# --- order, health, restarts -------------------------------------------------------------------
def test_healthchecks_on_long_running_services() -> None:
    for name, svc in SERVICES.items():
        if name == "setup":
            continue
        test = svc.get("healthcheck", {}).get("test")
        assert test, f"{name} has no healthcheck"
        if name in PRODUCT and name != "flower":
            assert test[:3] == ["CMD", "aggregator", "health"], (name, test)
            make_parser().parse_args(test[2:])  # a component the health command accepts
            assert seconds(svc["healthcheck"]["timeout"]) > 3, "checks have 3 s timeouts"


def test_start_order_and_restart_policies() -> None:
    setup = SERVICES["setup"]
    assert str(setup["restart"]) == "no"
    for dependency in ("kafka", "postgres", "influxdb"):
        assert setup["depends_on"][dependency]["condition"] == "service_healthy"
    for name in ("bridge", "worker-ingest", "worker-trends", "worker-default", "beat"):
        depends = SERVICES[name]["depends_on"]
        assert depends["setup"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
        assert SERVICES[name]["restart"] == "unless-stopped"
    assert SERVICES["bridge"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_bridge_grace_period_covers_its_shutdown_deadline() -> None:
    grace = seconds(SERVICES["bridge"]["stop_grace_period"])
    assert grace > float(ENV["BRIDGE_SHUTDOWN_DEADLINE_S"]), "SIGKILL would cut the bridge's flush"


def test_redis_never_evicts_and_persists() -> None:
    command = " ".join(argv(SERVICES["redis"]))
    assert "--maxmemory-policy noeviction" in command
    assert "--appendonly yes" in command


def test_product_runs_on_influxdb_in_compose() -> None:
    for name, svc in PRODUCT.items():
        assert svc["env_file"] == ".env", name
        assert interpolate(str(svc["environment"]["EVENT_STORE"])) == "influxdb", name


def test_flower_requires_basic_auth() -> None:
    flower = SERVICES["flower"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert "FLOWER_UNAUTHENTICATED_API" not in flower["environment"]
    user, _, password = ENV["FLOWER_BASIC_AUTH"].partition(":")
    assert user and password


# --- variables ------------------------------------------------------------------------------------
def compose_variables() -> set[str]:
    return {match.group(1) for match in _VAR.finditer(COMPOSE_PATH.read_text())}


def test_every_compose_variable_is_in_env_example() -> None:
    assert compose_variables() - set(ENV) == set()


def test_every_setting_is_in_env_example() -> None:
    assert SETTINGS_VARS - set(ENV) == set(), "add the new settings to .env.example"


def test_env_example_has_nothing_unused() -> None:
    assert set(ENV) - SETTINGS_VARS - compose_variables() == set()


def test_env_example_values_are_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.event_store == "influxdb"
    assert settings.result_backend == settings.redis_url  # blank RESULT_BACKEND_URL falls back


def test_env_example_points_at_the_compose_services() -> None:
    assert urlsplit(ENV["REDIS_URL"]).hostname == "redis"
    assert ENV["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert urlsplit(ENV["INFLUXDB_V2_URL"]).hostname == "influxdb"
    dsn = urlsplit(ENV["POSTGRES_DSN"])
    assert dsn.hostname == "postgres"
    assert (dsn.username, dsn.password, dsn.path.lstrip("/")) == (
        ENV["POSTGRES_USER"], ENV["POSTGRES_PASSWORD"], ENV["POSTGRES_DB"])
    assert ENV["INFLUXDB_V2_TOKEN"] == ENV["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert ENV["INFLUXDB_V2_ORG"] == ENV["DOCKER_INFLUXDB_INIT_ORG"]
    assert ENV["INFLUXDB_V2_BUCKET"] == ENV["DOCKER_INFLUXDB_INIT_BUCKET"]


def test_env_example_keeps_the_code_defaults() -> None:
    """Apart from the compose-specific values, .env.example shows the code's defaults."""
    compose_specific = {"REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "EVENT_STORE", "POSTGRES_DSN", "INFLUXDB_V2_URL",
                        "INFLUXDB_V2_TOKEN", "BRIDGE_METRICS_PORT"}
    for name, field in Settings.model_fields.items():
        key = name.upper()
        if key in compose_specific:
            continue
        default = "" if field.default is None else str(field.default)
        assert ENV[key] == default, f"{key}: .env.example {ENV[key]!r}, code default {default!r}"


# --- image ------------------------------------------------------------------------------------------
def test_dockerfile_installs_the_project_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith(("#", " "))]
    keywords = [words[0] for words in instructions]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    assert "ENTRYPOINT" not in keywords and "HEALTHCHECK" not in keywords
    assert re.search(r"pip install \.(\s|$)", text), "the image installs the project itself"
    assert "[dev]" not in text, "no dev dependencies in the image"
    user = [words[1] for words in instructions if words[0] == "USER"]
    assert user and user[-1].strip() not in {"root", "0"}
    copied = " ".join(words[1] for words in instructions if words[0] == "COPY")
    for needed in ("pyproject.toml", "README.md", "celeryconfig.py", "worker", "tasks"):
        assert needed in copied, f"the image needs {needed} to install the package"
