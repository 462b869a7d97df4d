"""Settings, the durations table and the beat schedule built from it."""

from __future__ import annotations

import ssl

import pytest

from worker.celeryapp.beat import build_beat_schedule
from worker.config.settings import ConfigurationError, Settings, load_settings
from worker.core.cron import min_period_s, parse_cron
from worker.core.durations import DEFAULT_DURATIONS, build_durations

pytestmark = pytest.mark.unit


def test_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_MAX_BATCH", "lots")
    monkeypatch.setenv("EVENT_STORE", "mongodb")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "BRIDGE_MAX_BATCH='lots'" in message and "EVENT_STORE='mongodb'" in message


def test_durations_table_matches_the_spec() -> None:
    table = {d.name: (d.span_s, d.gravity, d.window_s, d.windows, d.min_events, d.schedule) for d in DEFAULT_DURATIONS}
    assert table == {
        "currently": (21600, -0.00036, 360, 60, 10, "*/3 * * * *"),
        "today": (86400, -0.000025, 1440, 60, 30, "1-59/10 * * * *"),
        "week": (604800, -0.00000357142857, 10080, 60, 30, "25 * * * *"),
        "month": (2592000, -0.000000833333333, 43200, 60, 30, "5 */3 * * *"),
        "year": (31536000, -0.000000833333333, 525600, 60, 30, "4 2 * * *"),
    }


def test_override_changes_one_field() -> None:
    table = build_durations('{"currently": {"min_events": 5, "schedule": "*/5 * * * *"}}')
    assert table["currently"].min_events == 5 and table["currently"].schedule == "*/5 * * * *"
    assert table["today"] == DEFAULT_DURATIONS[1]


@pytest.mark.parametrize(("override", "error"), [
    ('{"hourly": {}}', "unknown duration 'hourly'"),
    ('{"today": {"min_event": 3}}', "unknown fields"),
    ('{"today": {"gravity": 0.1}}', "gravity must be negative"),
    ('{"today": {"schedule": "daily"}}', "5-field cron"),
    ("[1]", "must be a JSON object"),
    ("{oops", "not valid JSON"),
])
def test_bad_override_is_an_error(override: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        build_durations(override)


@pytest.mark.parametrize(("cron", "period"), [
    ("*/3 * * * *", 180), ("1-59/10 * * * *", 600), ("25 * * * *", 3600), ("5 */3 * * *", 3 * 3600),
    ("4 2 * * *", 86400), ("59 5 * * 1", 7 * 86400),
])
def test_min_period(cron: str, period: int) -> None:
    assert min_period_s(cron) == period


def test_beat_entries_expire_before_the_next_tick() -> None:
    schedule = build_beat_schedule(Settings())
    for duration in DEFAULT_DURATIONS:
        entry = schedule[f"trends-{duration.name}"]
        options = entry["options"]
        assert entry["args"] == (duration.name,) and options["queue"] == "trends"
        assert options["countdown"] == 15
        assert options["countdown"] < options["expires"] < min_period_s(duration.schedule)
    assert schedule["morning-post"]["task"] == "tasks.post.morning_post"
    assert str(schedule["morning-post"]["schedule"]).startswith("<crontab: 59 5 ")


def test_maintenance_runs_on_its_own_queue_and_expires_before_the_next_tick() -> None:
    entry = build_beat_schedule(Settings())["maintenance"]
    assert entry["task"] == "tasks.maintenance.maintain"
    assert entry["options"]["queue"] == "maintenance" != Settings().trends_queue
    assert entry["options"]["expires"] < min_period_s(Settings().maintenance_schedule)
    # At a minute in which no trend run starts (they share PostgreSQL).
    minute = int(Settings().maintenance_schedule.split()[0])
    assert all(minute not in parse_cron(d.schedule).minute for d in DEFAULT_DURATIONS)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("env", "named"), [
    ({"EVENT_RETENTION_DAYS": "365"}, "EVENT_RETENTION_DAYS (365) must cover the longest trend span (365 days)"),
    ({"TREND_DURATIONS": '{"year": {"span_s": 63072000}}'}, "EVENT_RETENTION_DAYS (400) must cover"),
    ({"TREND_HISTORY_HOURLY_DAYS": "3"}, "TREND_HISTORY_FULL_DAYS (7) <= TREND_HISTORY_HOURLY_DAYS (3)"),
    ({"TREND_HISTORY_RETENTION_DAYS": "30"}, "<= TREND_HISTORY_RETENTION_DAYS (30) must hold"),
    ({"MAINTENANCE_SCHEDULE": "every hour"}, "MAINTENANCE_SCHEDULE='every hour'"),
    # The time limits, the lease and the schedules must nest.
    ({"TASK_TIME_LIMIT_CHUNK_S": "150"}, "TASK_TIME_LIMIT_CHUNK_S (150) must be below TREND_LOCK_TTL_S (150)"),
    ({"TASK_TIME_LIMIT_FINALIZE_S": "600"}, "TASK_TIME_LIMIT_FINALIZE_S (600) must be below TREND_LOCK_TTL_S"),
    ({"TREND_LOCK_TTL_S": "3600"}, "TREND_LOCK_TTL_S (3600) must be below the period of currently (180 s"),
    ({"TREND_DURATIONS": '{"today": {"schedule": "*/2 * * * *"}}'}, "below the period of today (120 s"),
    ({"TASK_TIME_LIMIT_INGEST_S": "7200"}, "TASK_TIME_LIMIT_INGEST_S (7200) must be below VISIBILITY_TIMEOUT_S"),
])
def test_settings_that_must_agree_are_checked_at_start(monkeypatch: pytest.MonkeyPatch, env: dict[str, str],
                                                       named: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert named in str(caught.value)


def test_the_defaults_nest() -> None:
    settings = Settings()
    assert settings.task_time_limit_chunk_s < settings.trend_lock_ttl_s
    assert settings.task_time_limit_finalize_s < settings.trend_lock_ttl_s
    assert all(settings.trend_lock_ttl_s < min_period_s(d.schedule) for d in settings.durations().values())


def test_every_secret_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """Docker secrets: POSTGRES_DSN_FILE=/run/secrets/... (one trailing newline dropped)."""
    dsn = tmp_path / "postgres_dsn"
    dsn.write_text("postgresql://agg:s3cret@db:5432/agg\n")
    token = tmp_path / "token"
    token.write_text("tok-en")
    monkeypatch.setenv("POSTGRES_DSN_FILE", str(dsn))
    monkeypatch.setenv("X_ACCESS_TOKEN_FILE", str(token))
    settings = load_settings()
    assert settings.postgres_dsn.get_secret_value() == "postgresql://agg:s3cret@db:5432/agg"
    assert settings.x_access_token is not None and settings.x_access_token.get_secret_value() == "tok-en"
    assert "s3cret" in settings.secret_values()  # and so masked wherever a person reads


def test_kafka_security_reaches_librdkafka(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The keys every Kafka client gets; the password from its file, the CA only with TLS."""
    (tmp_path / "password").write_text("pa ss\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    for key, value in {"KAFKA_BOOTSTRAP_SERVERS": "k:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                       "KAFKA_SASL_USERNAME": "agg", "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
                       "KAFKA_SSL_CA_LOCATION": str(tmp_path / "ca.pem")}.items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.kafka_connection() == {
        "bootstrap.servers": "k:9093", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "agg", "sasl.password": "pa ss", "ssl.ca.location": str(tmp_path / "ca.pem")}
    assert "pa ss" in settings.secret_values() and "pa ss" not in repr(settings)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")  # credentials unused, nothing sent
    assert load_settings().kafka_connection() == {"bootstrap.servers": "k:9093", "security.protocol": "PLAINTEXT"}


@pytest.mark.parametrize(("env", "named"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "agg"},
     "KAFKA_SECURITY_PROTOCOL=SASL_SSL needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"),
    ({"KAFKA_SSL_CA_LOCATION": "{dir}/ca.pem"}, "KAFKA_SSL_CA_LOCATION='{dir}/ca.pem': is not a readable file"),
    ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM='GSSAPI'"),
])
def test_kafka_security_that_cannot_work_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path, env: dict[str, str],
                                                  named: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(dir=tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert named.format(dir=tmp_path) in str(caught.value)


@pytest.mark.parametrize(("env", "named"), [
    ({"POSTGRES_DSN": "postgresql://a@b/c", "POSTGRES_DSN_FILE": "{dir}/dsn"},
     "POSTGRES_DSN and POSTGRES_DSN_FILE are both set"),
    ({"REDIS_URL_FILE": "{dir}/missing"}, "REDIS_URL_FILE='{dir}/missing': No such file or directory"),
    ({"POSTGRES_DSN_FILE": "{dir}/empty"}, "is empty"),
])
def test_a_secret_file_that_cannot_be_used_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path, env: dict[str, str],
                                                    named: str) -> None:
    (tmp_path / "dsn").write_text("postgresql://x@y/z")
    (tmp_path / "empty").write_text("\n")
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(dir=tmp_path))
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert named.format(dir=tmp_path) in str(caught.value)


def test_postgres_password_apart_from_the_dsn(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """POSTGRES_PASSWORD_FILE with a password-less DSN: the connection gets the password."""
    from urllib.parse import unquote, urlsplit

    from worker.db.connection import Database

    password = tmp_path / "postgres_password"
    password.write_text("p@ss word/1\n")
    monkeypatch.setenv("POSTGRES_DSN", "postgresql://agg@db:5432/agg")
    monkeypatch.setenv("POSTGRES_PASSWORD_FILE", str(password))
    settings = load_settings()
    database = Database.from_settings(settings)
    assert unquote(urlsplit(database.dsn).password or "") == "p@ss word/1"
    assert "p@ss word/1" not in repr(database) and "p@ss word/1" not in repr(settings)
    assert "p@ss word/1" in settings.secret_values()
    assert settings.addresses()["PostgreSQL"] == "postgresql://agg@db:5432/agg"


@pytest.mark.parametrize("dsn", ["postgresql://agg:in-dsn@db:5432/agg", "host=db user=agg password=in-dsn"])
def test_a_password_in_the_dsn_and_apart_is_refused(monkeypatch: pytest.MonkeyPatch, dsn: str) -> None:
    monkeypatch.setenv("POSTGRES_DSN", dsn)
    monkeypatch.setenv("POSTGRES_PASSWORD", "apart-pw")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is set and POSTGRES_DSN holds a password too" in message
    assert "in-dsn" not in message and "apart-pw" not in message


def test_redis_password_apart_from_the_urls(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """REDIS_PASSWORD_FILE joins the URL's user in the one address every client connects to,
    percent-encoded (kombu, redbeat, Flower and redis-py all unquote it)."""
    from urllib.parse import unquote, urlsplit

    password = tmp_path / "redis_password"
    password.write_text("p@ss:word/1\n")
    monkeypatch.setenv("REDIS_URL", "rediss://aggregator@redis:6380/0")
    monkeypatch.setenv("RESULT_BACKEND_URL", "redis://results:6379/1")
    monkeypatch.setenv("REDIS_PASSWORD_FILE", str(password))
    settings = load_settings()
    broker = urlsplit(settings.redis_address())
    assert (broker.scheme, broker.username, unquote(broker.password or ""), broker.hostname, broker.path) == (
        "rediss", "aggregator", "p@ss:word/1", "redis", "/0")
    results = urlsplit(settings.redis_address(settings.result_backend))
    assert (results.username, unquote(results.password or ""), results.port) == ("", "p@ss:word/1", 6379)
    assert "p@ss:word/1" in settings.secret_values() and "p@ss" not in repr(settings)
    assert settings.redis_tls()["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert settings.redis_tls(settings.result_backend) == {}


def test_a_redis_password_in_the_url_and_apart_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://aggregator:in-url@redis:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "apart-pw")
    monkeypatch.setenv("REDIS_CA_CERT", "/nowhere/ca.crt")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "REDIS_URL or RESULT_BACKEND_URL holds a password too" in message
    assert "REDIS_CA_CERT (/nowhere/ca.crt) is not a file" in message
    assert "in-url" not in message and "apart-pw" not in message
