"""Every combination of compose-started and outside services is a valid deployment.

Kafka, PostgreSQL, Redis and InfluxDB each have a profile: on, compose starts the service;
off, the product takes it from the connection variables (an amba system's own). For all 16
combinations this renders docker-compose.yml as compose would with that COMPOSE_PROFILES
(tests/support/compose.py), validates the result against the compose specification's
schema, checks that no enabled service requires a disabled one (compose would refuse to
start), and builds the product's Settings from each product service's environment: it
validates, and every address points at compose's service when its profile is on and at the
outside one when it is off. No Docker engine runs here; this is what stands in for
`docker compose config` on each combination.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.support.compose import (
    AMBA_NETWORK_PATH,
    ENV_PATH,
    ComposeError,
    active_profiles,
    load_compose,
    merged,
    parse_env_file,
    profile_combinations,
    render,
    schema_errors,
    settings_from,
    with_secret_files,
)

pytestmark = pytest.mark.unit

ENV = parse_env_file(ENV_PATH)
INFRA = ("influxdb", "kafka", "postgres", "redis")
# What an operator writes in .env for a service outside compose (example hosts of an amba
# system), and the host each product service must then reach.
OUTSIDE: dict[str, dict[str, str]] = {
    "kafka": {"KAFKA_BOOTSTRAP_SERVERS": "kafka.amba.example:9092"},
    "postgres": {"POSTGRES_HOST": "postgres.amba.example", "POSTGRES_PORT": "5433", "POSTGRES_USER": "streams",
                 "POSTGRES_DB": "amba"},
    "redis": {"REDIS_URL": "redis://redis.amba.example:6380/2"},
    "influxdb": {"INFLUXDB_V2_URL": "http://influxdb.amba.example:8086", "INFLUXDB_ORG": "amba"},
}
# The secret files (scripts/make-secrets.sh's, or amba's password and token written into them).
SECRETS = {"redis_password": "redis p@ss/word",
           "postgres_password": "pg p@ss/word", "influxdb_token": "influx-token==", "influxdb_admin_password": "x",
           "x_consumer_key": "", "x_consumer_secret": "", "x_access_token": "", "x_access_token_secret": "",
           "kafka_sasl_password": "", "kafka_ca": ""}
COMBINATIONS = profile_combinations(INFRA)


def env_for(enabled: frozenset[str]) -> dict[str, str]:
    env = dict(ENV)
    env["COMPOSE_PROFILES"] = ",".join(sorted(enabled))
    for name in set(INFRA) - enabled:
        env.update(OUTSIDE[name])
    return env


def label(enabled: frozenset[str]) -> str:
    return "+".join(sorted(enabled)) or "all-outside"


def test_sixteen_combinations() -> None:
    assert len(set(COMBINATIONS)) == 16


def test_env_example_starts_the_full_local_stack() -> None:
    assert active_profiles(ENV) == set(INFRA)


@pytest.mark.parametrize("enabled", COMBINATIONS, ids=label)
def test_each_combination_renders_to_a_valid_compose_project(enabled: frozenset[str]) -> None:
    project = render(env_for(enabled))  # ComposeError: compose would refuse to start
    assert schema_errors(project) == []
    services = set(project["services"])
    assert services & set(INFRA) == enabled
    product = {name for name, svc in load_compose()["services"].items() if "build" in svc}
    assert product <= services, "the product's services run in every combination"


@pytest.mark.parametrize("enabled", COMBINATIONS, ids=label)
def test_each_product_service_reaches_compose_or_the_outside_service(
        enabled: frozenset[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.db.connection import Database

    env = env_for(enabled)
    project = render(env)
    want_kafka = "kafka:9092" if "kafka" in enabled else OUTSIDE["kafka"]["KAFKA_BOOTSTRAP_SERVERS"]
    want_pg = ("postgres", 5432) if "postgres" in enabled else ("postgres.amba.example", 5433)
    want_redis = "redis" if "redis" in enabled else "redis.amba.example"
    want_influx = "influxdb" if "influxdb" in enabled else "influxdb.amba.example"
    for name, service in project["services"].items():
        if "build" not in service:
            continue
        environment = with_secret_files(project, name, tmp_path, SECRETS)
        settings = settings_from(environment, monkeypatch)  # raises on an invalid value
        if "KAFKA_BOOTSTRAP_SERVERS" in environment:
            assert settings.kafka_bootstrap_servers == want_kafka, name
        if "POSTGRES_DSN" in environment:
            assert urlsplit(settings.postgres_dsn.get_secret_value()).password is None, f"{name}: password in the DSN"
            dsn = urlsplit(Database.from_settings(settings).dsn)
            assert (dsn.hostname, dsn.port) == want_pg, name
            assert (dsn.username, dsn.path) == (env["POSTGRES_USER"], f"/{env['POSTGRES_DB']}"), name
            assert unquote(dsn.password or "") == SECRETS["postgres_password"], name
        if "REDIS_URL" in environment:
            assert urlsplit(settings.redis_url.get_secret_value()).hostname == want_redis, name
            assert unquote(urlsplit(settings.redis_address()).password or "") == SECRETS["redis_password"], name
        if "INFLUXDB_V2_URL" in environment:
            assert urlsplit(settings.influxdb_v2_url or "").hostname == want_influx, name
            assert settings.influxdb_v2_token is not None
            assert settings.influxdb_v2_token.get_secret_value() == SECRETS["influxdb_token"], name


def test_monitoring_profile_adds_its_services_to_the_full_stack() -> None:
    env = dict(ENV, COMPOSE_PROFILES=ENV["COMPOSE_PROFILES"] + ",monitoring")
    project = render(env)
    assert schema_errors(project) == []
    assert {"prometheus", "alertmanager", "grafana"} <= set(project["services"])


def test_a_dependency_without_required_false_is_refused() -> None:
    """The render check itself: a product service that requires a disabled store fails."""
    document = load_compose()
    document["services"]["bridge"]["depends_on"]["kafka"].pop("required")
    render(env_for(frozenset(INFRA)), document)  # kafka on: fine
    with pytest.raises(ComposeError, match="bridge requires kafka"):
        render(env_for(frozenset(INFRA) - {"kafka"}), document)


def test_the_schema_check_catches_a_misspelt_attribute() -> None:
    document = load_compose()
    document["services"]["setup"]["depends_on"]["postgres"]["requried"] = False
    assert schema_errors(render(env_for(frozenset(INFRA)), document))


def test_amba_network_override_joins_only_the_services_that_reach_amba() -> None:
    """docker-compose.amba-network.yml merged over the file: the product's services that use
    Kafka, PostgreSQL or InfluxDB join amba's network and keep the project's (Redis,
    Prometheus); Redis, Flower and the monitoring stay off amba's, where any amba container
    could enqueue the product's tasks or read its metrics."""
    document = merged(load_compose(), load_compose(AMBA_NETWORK_PATH))
    env = env_for(frozenset({"redis"})) | {"AMBA_NETWORK": "amba-analysis-streams_backend",
                                          "COMPOSE_PROFILES": "redis,monitoring"}
    project = render(env, document)
    assert schema_errors(project) == []
    assert project["networks"]["amba"] == {"name": "amba-analysis-streams_backend", "external": True}
    services = project["services"]
    reach_amba = {name for name, svc in services.items()
                  if {"KAFKA_BOOTSTRAP_SERVERS", "POSTGRES_DSN", "INFLUXDB_V2_URL"} & set(svc.get("environment", {}))}
    on_amba = {name for name, svc in services.items() if "amba" in svc.get("networks", [])}
    assert on_amba == reach_amba
    assert not on_amba & {"redis", "flower", "prometheus", "alertmanager", "grafana"}
    for name in on_amba:
        assert services[name]["networks"] == ["default", "amba"], f"{name} must still reach Redis"
    with pytest.raises(ComposeError, match="AMBA_NETWORK"):
        render(env_for(frozenset({"redis"})), document)
