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
from worker.config.settings import Settings
from worker.ops.cli import make_parser

pytestmark = pytest.mark.unit

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
    assert set(PRODUCT) == {"setup", "bridge", "worker-ingest", "worker-trends", "worker-default", "beat", "flower",
                            "exporter"}
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
    assert re.search(r'^aggregator\s*=\s*"worker\.ops\.cli:main"', text, re.M)


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


def test_one_beat_service_under_the_redis_lock() -> None:
    """Beat is one service whose replicas (and beats on other hosts) are standbys: the
    scheduler holds a Redis lock (celery-redbeat), so a second beat waits instead of firing
    every entry twice; no worker embeds a beat of its own beside it."""
    commands = {name: argv(svc) for name, svc in SERVICES.items() if "command" in svc}
    beats = [name for name, words in commands.items() if words[:4] == ["celery", "-A", "worker.app", "beat"]]
    assert beats == ["beat"]
    embedded = [name for name, words in commands.items() if {"-B", "--beat"} & set(words)]
    assert not embedded, f"a worker with an embedded beat is a second scheduler: {embedded}"
    assert celeryconfig.beat_scheduler == "redbeat.RedBeatScheduler"
    scheduler = option(argv(SERVICES["beat"]), "--scheduler", "-S")
    assert scheduler in (None, celeryconfig.beat_scheduler), "the command line must not swap the locked scheduler"


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
    # A bound, or noeviction never applies and an outage grows Redis until the kernel kills it.
    assert f"--maxmemory {ENV['REDIS_MAXMEMORY']} " in command
    assert "--appendonly yes" in command


def service_env(name: str) -> dict[str, str]:
    """The environment compose gives a service, interpolated from .env.example."""
    environment = SERVICES[name].get("environment", {})
    assert isinstance(environment, dict), f"{name}: environment as a mapping, please"
    return {key: interpolate(str(value)) for key, value in environment.items()}


def test_no_service_gets_the_whole_env_file() -> None:
    for name, svc in SERVICES.items():
        assert "env_file" not in svc, f"{name}: pass the variables it needs, not the whole .env"


def test_product_runs_on_influxdb_in_compose() -> None:
    for name in ("setup", "worker-ingest", "worker-trends"):
        assert service_env(name)["EVENT_STORE"] == "influxdb", name


# Which product service may see which secret: the rest must not get it at all.
SECRET_HOLDERS = {
    # beat: only for its healthcheck (`health beat trends` reads the runs' finalize times).
    "POSTGRES_DSN": {"setup", "worker-ingest", "worker-trends", "worker-default", "beat", "exporter"},
    "INFLUXDB_V2_TOKEN": {"setup", "worker-ingest", "worker-trends"},
    "X_CONSUMER_KEY": {"setup", "worker-default"},
    "X_CONSUMER_SECRET": {"setup", "worker-default"},
    "X_ACCESS_TOKEN": {"setup", "worker-default"},
    "X_ACCESS_TOKEN_SECRET": {"setup", "worker-default"},
    "FLOWER_BASIC_AUTH": {"setup", "flower"},
}


@pytest.mark.parametrize("secret", sorted(SECRET_HOLDERS))
def test_each_secret_reaches_only_the_services_that_use_it(secret: str) -> None:
    holders = {name for name in PRODUCT if secret in SERVICES[name].get("environment", {})}
    assert holders == SECRET_HOLDERS[secret]


@pytest.mark.parametrize("name", sorted(PRODUCT))
def test_each_product_service_gets_valid_settings(name: str) -> None:
    """What compose hands each service (from .env.example) passes the settings validation."""
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in service_env(name).items()  # type: ignore[arg-type]
                                           if k.lower() in Settings.model_fields and v != ""})
    if name in ("setup", "worker-ingest", "worker-trends", "worker-default"):
        assert urlsplit(settings.postgres_dsn.get_secret_value()).hostname == "postgres"


def test_setup_refuses_the_placeholder_secrets_of_env_example() -> None:
    from worker.ops.commands.setup import placeholder_secrets

    environment = service_env("setup")
    settings = Settings(_env_file=None, **{k.lower(): v for k, v in environment.items()  # type: ignore[arg-type]
                                           if k.lower() in Settings.model_fields and v != ""})
    assert set(placeholder_secrets(settings, environment)) == {"POSTGRES_DSN", "INFLUXDB_V2_TOKEN",
                                                                "FLOWER_BASIC_AUTH"}


def test_published_ports_listen_on_loopback_only() -> None:
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_values_that_must_agree_are_written_once() -> None:
    influx = service_env("influxdb")
    for name in ("setup", "worker-ingest", "worker-trends"):
        env = service_env(name)
        assert env["INFLUXDB_V2_TOKEN"] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"] == ENV["INFLUXDB_TOKEN"]
        assert env["INFLUXDB_V2_ORG"] == influx["DOCKER_INFLUXDB_INIT_ORG"] == ENV["INFLUXDB_ORG"]
        assert env["INFLUXDB_V2_BUCKET"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    postgres = service_env("postgres")
    for name in SECRET_HOLDERS["POSTGRES_DSN"]:
        dsn = urlsplit(service_env(name)["POSTGRES_DSN"])
        assert (dsn.username, dsn.password, dsn.path.lstrip("/")) == (
            postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"], postgres["POSTGRES_DB"])


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


# Settings compose builds from other .env values (written once there), and one for tests only.
COMPOSED = {"POSTGRES_DSN", "INFLUXDB_V2_TOKEN", "INFLUXDB_V2_ORG"}
TEST_ONLY = {"X_API_BASE_URL"}


def test_every_setting_is_in_env_example() -> None:
    assert SETTINGS_VARS - COMPOSED - TEST_ONLY - set(ENV) == set(), "add the new settings to .env.example"


def test_every_setting_reaches_a_product_service() -> None:
    passed = {key for name in PRODUCT for key in SERVICES[name].get("environment", {})}
    assert SETTINGS_VARS - TEST_ONLY - passed == set(), "compose passes these settings to no service"


def test_env_example_has_nothing_unused() -> None:
    assert set(ENV) - compose_variables() == set(), "set in .env but read by no service"


def test_env_example_points_at_the_compose_services() -> None:
    assert urlsplit(ENV["REDIS_URL"]).hostname == "redis"
    assert ENV["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert urlsplit(ENV["INFLUXDB_V2_URL"]).hostname == "influxdb"


def test_env_example_keeps_the_code_defaults() -> None:
    """Apart from the compose-specific values, .env.example shows the code's defaults."""
    compose_specific = {"REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS", "EVENT_STORE", "INFLUXDB_V2_URL",
                        "BRIDGE_METRICS_PORT", "WORKER_METRICS_PORT", "PROMETHEUS_MULTIPROC_DIR"}
    for name, field in Settings.model_fields.items():
        key = name.upper()
        if key in compose_specific | COMPOSED | TEST_ONLY:
            continue
        default = "" if field.default is None else str(field.default)
        if hasattr(field.default, "get_secret_value"):
            default = field.default.get_secret_value()
        assert ENV[key] == default, f"{key}: .env.example {ENV[key]!r}, code default {default!r}"


# --- image ------------------------------------------------------------------------------------------
def test_dockerfile_installs_the_project_as_non_root() -> None:
    text = DOCKERFILE.read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith(("#", " "))]
    keywords = [words[0] for words in instructions]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    assert "ENTRYPOINT" not in keywords and "HEALTHCHECK" not in keywords
    assert re.search(r"pip install --no-deps \.(\s|$)", text), "the image installs the project itself"
    assert "[dev]" not in text, "no dev dependencies in the image"
    user = [words[1] for words in instructions if words[0] == "USER"]
    assert user and user[-1].strip() not in {"root", "0"}
    copied = " ".join(words[1] for words in instructions if words[0] == "COPY")
    for needed in ("pyproject.toml", "README.md", "celeryconfig.py", "worker", "tasks"):
        assert needed in copied, f"the image needs {needed} to install the package"


# --- the lock the image installs -------------------------------------------------------------------
LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from requirements.lock."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in LOCK.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", line)
        if match:
            current = canonicalize_name(match.group(1))
            pins[current] = (match.group(2), 0)
        elif current and "--hash=sha256:" in line:
            version, hashes = pins[current]
            pins[current] = (version, hashes + 1)
    return pins


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = locked()
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for text in declared:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is declared but not in requirements.lock: regenerate it (README)"
        assert Version(pins[name][0]) in requirement.specifier, f"{name}=={pins[name][0]} violates {requirement}"
    for pinned, (version, hashes) in pins.items():
        assert hashes >= 1, f"{pinned}=={version} has no hash: the image installs with --require-hashes"
    # Nothing from the test, bench or dev extras leaks into the image.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    dev_only = {canonicalize_name(Requirement(r).name) for group in extras.values() for r in group} - {
        canonicalize_name(Requirement(r).name) for r in declared}
    transitive_ok = {"packaging", "requests", "urllib3", "oauthlib"}  # runtime packages need them too
    assert (dev_only - transitive_ok) & set(pins) == set(), "a test/bench-only package is in the image's lock"


# The image's install, as the Dockerfile runs it and .ci/run repeats it against the registry.
IMAGE_INSTALL = ("pip install --require-hashes --no-deps -r requirements.lock", "pip install --no-deps .",
                 "pip check")


def test_dockerfile_installs_from_the_lock_and_checks_it() -> None:
    text = DOCKERFILE.read_text()
    for command in IMAGE_INSTALL:
        assert command in text, f"Dockerfile lost `{command}`"
    assert "COPY requirements.lock" in text
    ci = (ROOT / ".ci" / "run").read_text()
    for command in IMAGE_INSTALL:
        assert command in ci, f".ci/run must repeat the image's `{command}`"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*")] == "*", "ignore everything, then allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements.lock", "celeryconfig.py", "worker", "tasks"}
