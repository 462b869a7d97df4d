"""Typed configuration from the environment, all of it validated when a process starts, so a
wrong value stops it with a message naming the variable. A field's ``description`` is its only
documentation (docs/development.md, "Settings"); credentials are ``SecretStr``.
"""

from __future__ import annotations

import operator
import os
import re
import ssl
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from worker.core.cron import min_period_s, parse_cron
from worker.core.durations import Duration, build_durations
from worker.core.influx_layout import Layout, LayoutError
from worker.core.masking import mask_dsn, mask_url
from worker.core.retention import RetentionPolicy

#: The placeholder .env.example uses for every secret; `aggregator setup` refuses it.
PLACEHOLDER_SECRET = "change-me"

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*([smh]))?\s*$")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[^\s\[\]:/,]+):(\d{1,5})$")


class ConfigurationError(SystemExit):
    """An invalid setting. A ``SystemExit``, so a worker or beat stops with this message, not a
    traceback; the ``aggregator`` command exits 78."""


def _check_redis_url(value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("must be a redis://, rediss:// or unix:// URL, e.g. redis://redis:6379/0")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ValueError("has no host, e.g. redis://redis:6379/0")
        _ = parts.port  # raises ValueError on a port that is not a number in range
    db = parts.path.strip("/")
    if parts.scheme != "unix" and db and not db.isdigit():
        raise ValueError(f"database {db!r} is not a number, e.g. redis://redis:6379/0")


def _check_postgres_dsn(value: str) -> None:
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import parse_dsn

    if not value:
        raise ValueError("is empty: libpq would fall back to its own defaults")
    if "://" in value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL or a libpq keyword string (host=... dbname=...)")
    try:
        parsed = parse_dsn(value)
    except ProgrammingError as error:
        raise ValueError(str(error).strip().splitlines()[0]) from None
    port = parsed.get("port")
    if port is not None and not all(p.isdigit() for p in port.split(",")):
        raise ValueError(f"port {port!r} is not a number")


def _password(connection_string: str) -> str | None:
    """The password a Redis URL or a PostgreSQL DSN (URL or keywords) holds, if any."""
    from psycopg2.extensions import parse_dsn

    if connection_string.startswith(("redis", "unix")):
        return urlsplit(connection_string).password
    password: str | None = parse_dsn(connection_string).get("password")
    return password


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The secret settings (typed ``SecretStr``), in declaration order: each may come from a
    ``<NAME>_FILE``, and ``setup`` refuses .env.example's placeholder in any of them."""
    return [name for name, field in settings_cls.model_fields.items() if "SecretStr" in str(field.annotation)]


class SecretFiles(PydanticBaseSettingsSource):
    """Every secret setting from a file (``POSTGRES_DSN_FILE=/run/secrets/postgres_dsn``), as
    Docker and Kubernetes hand secrets over; one trailing newline dropped. A variable set both
    ways, or an unreadable file, is refused: the operator must not guess which value is used."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name in secret_fields(self.settings_cls):
            variable = name.upper()
            path = os.environ.get(f"{variable}_FILE", "").strip()
            if not path:
                continue
            if os.environ.get(variable, "").strip():
                raise ConfigurationError(f"invalid configuration: {variable} and {variable}_FILE are both set; "
                                         "keep one")
            try:
                text = Path(path).read_text(encoding="utf-8")
            except OSError as error:
                raise ConfigurationError(f"invalid configuration: {variable}_FILE={path!r}: "
                                         f"{error.strerror or error}") from None
            values[name] = text.removesuffix("\n").removesuffix("\r")
        return values


class ConnectionSettings(BaseModel):
    """Redis, Celery's broker and result backend; how long to wait for any service."""

    redis_url: SecretStr = Field(SecretStr("redis://127.0.0.1:6379/0"), description=(
        "Celery's broker; rediss:// for TLS. A password in it: URL-safe characters (letters, digits, - _ . ~) or "
        "percent-encoded."))
    result_backend_url: SecretStr | None = Field(None, description="Celery's result backend; not set = REDIS_URL.")
    redis_password: SecretStr | None = Field(None, description=(
        "The password apart from REDIS_URL and RESULT_BACKEND_URL (for the user they name, or Redis's default user); "
        "a URL with a password too is refused."))
    redis_ca_cert: str | None = Field(None, description=(
        "With rediss://: the CA certificate (PEM) Redis's certificate and host name are verified against; not set = "
        "the system's CAs."))
    connect_timeout_s: float = Field(10.0, ge=0.5, le=300, description=(
        "How long a process waits for any service to answer before it calls it unreachable (an error, not a hang)."))

    @property
    def result_backend(self) -> SecretStr:
        return self.result_backend_url or self.redis_url

    def redis_address(self, url: SecretStr | None = None) -> str:
        """``url`` (default REDIS_URL) with REDIS_PASSWORD in it: what every Redis client connects to."""
        raw = (url or self.redis_url).get_secret_value()
        if self.redis_password is None:
            return raw
        parts = urlsplit(raw)
        user, _, host = parts.netloc.rpartition("@")
        password = quote(self.redis_password.get_secret_value(), safe="")
        return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))

    def redis_tls(self, url: SecretStr | None = None) -> dict[str, Any]:
        """The TLS options of a client of a rediss:// ``url`` (default REDIS_URL), as redis-py,
        kombu's ``broker_use_ssl`` and Celery's ``redis_backend_use_ssl`` take them; none for redis://."""
        if urlsplit((url or self.redis_url).get_secret_value()).scheme != "rediss":
            return {}
        return {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": self.redis_ca_cert}


class KafkaSettings(BaseModel):
    """The topic the bridge consumes, and its dead letters."""

    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", description="Brokers: host:port, comma-separated.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL (TLS), SASL_SSL (a password over TLS: a managed Kafka) or "
        "SASL_PLAINTEXT. Every Kafka client of the product uses these settings.")
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="With SASL_*: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, as the brokers want.")
    kafka_sasl_username: str | None = Field(None, description="With SASL_* (needed).")
    kafka_sasl_password: SecretStr | None = Field(None, description="With SASL_* (needed).")
    kafka_ssl_ca_location: str | None = Field(None, description=(
        "With SSL or SASL_SSL: the CA certificate (PEM) the brokers' certificates are verified against; not set "
        "= the system's CAs. The certificates are always verified, their host names too."))
    kafka_topic: str = Field("events_processed-discusses", min_length=1, description="The bridge's topic.")
    kafka_group_id: str = Field("trend-aggregator", min_length=1, description="Consumer group of the bridges.")
    kafka_session_timeout_ms: int = Field(10_000, ge=1000, description=(
        "A bridge that dies without leaving the group keeps its partitions this long (the others own them ~3 s "
        "later). At least 3x librdkafka's heartbeat interval (3 s)."))
    kafka_prefetch_kbytes: int = Field(16_384, ge=1024, le=2_097_151, description=(
        "librdkafka's queued.max.messages.kbytes: the bridge's memory peak on a backlog (16 MiB: ~30,000 events)."))
    kafka_dlq_topic: str = Field("events_processed-discusses.dlq", min_length=1,
                                 description="Dead letters: invalid events and batches past their retries.")
    kafka_dlq_partitions: int = Field(1, ge=1, description="Partitions when setup creates the dead-letter topic.")
    kafka_dlq_replication_factor: int | None = Field(None, ge=1, description=(
        "Copies of the dead-letter topic when setup creates it; blank = 3, or one per broker on a smaller cluster."))
    kafka_dlq_retention_days: int = Field(0, ge=0, description=(
        "Days Kafka keeps a dead letter; 0 = for ever. Set by setup and the bridge, on an existing topic too."))
    dlq_max_attempts: int = Field(3, ge=1, description=(
        "`dlq replay` appends a letter still invalid again (attempt + 1) up to this, then parks it. The bridge's "
        "failure is attempt 1."))

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",") if part.strip()]
        if not servers:
            raise ValueError("needs at least one host:port")
        for server in servers:
            match = _HOST_PORT.match(server)
            if match is None or not 0 < int(match.group(2)) < 65536:
                raise ValueError(f"{server!r} is not host:port (e.g. kafka:9092)")
        return ",".join(servers)

    @field_validator("kafka_ssl_ca_location")
    @classmethod
    def _readable_file(cls, value: str | None) -> str | None:
        if value is not None and not (os.path.isfile(value) and os.access(value, os.R_OK)):
            raise ValueError("is not a readable file")
        return value

    def kafka_connection(self) -> dict[str, str]:
        """librdkafka's keys that reach the brokers, for every Kafka client: one place, so the
        bridge, the dead letters, setup and the health and lag checks cannot disagree."""
        protocol = self.kafka_security_protocol
        config = {"bootstrap.servers": self.kafka_bootstrap_servers, "security.protocol": protocol}
        if protocol.startswith("SASL_") and self.kafka_sasl_username and self.kafka_sasl_password:
            config.update({"sasl.mechanisms": self.kafka_sasl_mechanism, "sasl.username": self.kafka_sasl_username,
                           "sasl.password": self.kafka_sasl_password.get_secret_value()})
        if protocol.endswith("SSL") and self.kafka_ssl_ca_location:
            config["ssl.ca.location"] = self.kafka_ssl_ca_location
        return config


class StoreSettings(BaseModel):
    """Event store (PostgreSQL or InfluxDB, amba's layout); PostgreSQL holds the trends either way. A
    statement past its timeout (0 = none) fails like an unreachable store: retried, or its run fails."""

    event_store: Literal["postgres", "influxdb"] = Field("postgres", description="postgres or influxdb.")
    postgres_dsn: SecretStr = Field(SecretStr("postgresql://aggregator:aggregator@127.0.0.1:5432/aggregator"),
                                    description="A postgresql:// URL or libpq keywords.")
    postgres_password: SecretStr | None = Field(None, description="For a POSTGRES_DSN without one; both is refused.")
    pg_statement_timeout_ingest_s: float = Field(60.0, ge=0, description="An ingest batch's statements.")
    pg_statement_timeout_trends_s: float = Field(60.0, ge=0, description="Qualifying DOIs, a chunk's inputs.")
    pg_statement_timeout_finalize_s: float = Field(60.0, ge=0, description="Each statement of the finalize.")
    pg_lock_timeout_s: float = Field(10.0, ge=0, description=(
        "The sessions of ingest's writes and of the trend runs (the maintenance DDL has its own)."))
    influxdb_v2_url: str | None = Field(None, description="Needed with EVENT_STORE=influxdb.")
    influxdb_v2_token: SecretStr | None = Field(None, description="May create and write buckets and tasks in the org.")
    influxdb_v2_org: str = Field("amba", description="The InfluxDB organization of the buckets and tasks.")
    influxdb_v2_bucket: str = Field("currently", description="The raw events, as amba's streams API reads them.")
    influxdb_v2_retention_days: int = Field(400, ge=0, description=(
        "Set by setup; 0 = for ever. At least the longest span plus a day (366)."))
    influxdb_v2_timeout_ms: int = Field(30_000, ge=1000, description="One InfluxDB request.")
    influxdb_bucket_prefix: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$", description=(
        "Prefix of the other buckets and tasks setup manages; empty in an amba system (it reads fixed names)."))
    influxdb_measurement: str = Field("trending", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                                      description="Of the events, the downsampled windows and the trend rows.")


class CelerySettings(BaseModel):
    """Redelivery, the active beat, and each task kind's hard time limit (the soft one fails it first;
    docs/trends.md, "A hung chunk")."""

    visibility_timeout_s: int = Field(7200, ge=1, description=(
        "Redis redelivers an unacked task after this: keep it above the longest task, retry wait and chord."))
    worker_heartbeat_ttl_s: float = Field(10.0, ge=1, le=600, description=(
        "A worker's heartbeat lives this long: a dead worker's deliveries come back within this plus a fifth."))
    beat_lock_timeout_s: int = Field(60, ge=5, le=90, description=(
        "The active beat's lock: a standby takes over within this plus a fifth (at most 90: within beat's 120 s "
        "starting deadline, so a missed tick fires late, not never)."))
    task_time_limit_ingest_s: float = Field(120.0, gt=1, description="Storing one batch.")
    task_time_limit_trend_run_s: float = Field(120.0, gt=1, description="The plan: select and cut the DOIs.")
    task_time_limit_chunk_s: float = Field(120.0, gt=1, description="One chunk of a trend run.")
    task_time_limit_finalize_s: float = Field(120.0, gt=1, description="Finalize, view refresh; the errback.")
    task_time_limit_maintenance_s: float = Field(1800.0, gt=1, description="Partitions, retention, thinning.")
    task_time_limit_post_s: float = Field(120.0, gt=1, description="The morning post.")


class IngestSettings(BaseModel):
    """The workers that write the bridge's batches to the event store."""

    ingest_queue: str = Field("ingest", min_length=1, description="Celery queue of the ingest tasks.")
    ingest_rate_limit: str = Field("20/s", description=(
        "Batches written per second (N/s, N/m, N/h) by ALL ingest workers together: more workers do not raise it."))
    ingest_outage_tolerance_s: float = Field(3600.0, gt=0, description=(
        "How long a batch waits for an unavailable store before it is dead-lettered."))
    ingest_retry_backoff_s: float = Field(2.0, gt=0, description="First retry wait (exponential, jittered).")
    ingest_retry_backoff_max_s: float = Field(30.0, gt=0, description=(
        "Longest wait between attempts: at least 10 s below BRIDGE_CONFIRM_TIMEOUT_S."))

    @field_validator("ingest_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        match = _RATE.match(value)
        if match is None or float(match.group(1)) <= 0:
            raise ValueError("must be a Celery rate limit: a positive number of tasks per second, "
                             "or N/s, N/m, N/h (e.g. 20/s)")
        number, unit = match.groups()
        return f"{number}/{unit or 's'}"

    def ingest_rate_per_s(self) -> float:
        """``INGEST_RATE_LIMIT`` in batches per second."""
        number, unit = self.ingest_rate_limit.split("/")
        return float(number) / {"s": 1, "m": 60, "h": 3600}[unit]

    def ingest_burst(self) -> float:
        """The shared bucket's capacity: one second's worth of writes, at least one."""
        return max(1.0, self.ingest_rate_per_s())


class BridgeSettings(BaseModel):
    """From Kafka to the ingest queue. A batch leaves about every BRIDGE_TARGET_INTERVAL_S:
    its ceiling is the smoothed rate x the interval, within [BRIDGE_MIN_BATCH, BRIDGE_MAX_BATCH]."""

    bridge_target_interval_s: float = Field(5.0, gt=0, description="Between batches, whatever the rate.")
    bridge_rate_half_life_s: float = Field(60.0, gt=0, description="Of the smoothed incoming rate.")
    bridge_min_batch: int = Field(1, ge=1, description="Smallest ceiling, events.")
    bridge_max_batch: int = Field(5000, ge=1, description="Largest ceiling, events.")
    bridge_max_batch_age_s: float = Field(10.0, gt=0, description="A batch never waits longer.")
    bridge_max_batch_bytes: int = Field(4_000_000, ge=10_000, description="One batch is one Celery message.")
    bridge_hysteresis: float = Field(0.25, ge=0, lt=1, description="Change needed before the ceiling moves.")
    bridge_queue_high_watermark: int = Field(200, ge=1, description="Ingest tasks queued: the bridge pauses ...")
    bridge_queue_low_watermark: int = Field(50, ge=0, description="... and resumes.")
    bridge_redis_memory_high_watermark: float = Field(0.8, gt=0.05, le=1, description=(
        "The bridge also pauses at this share of Redis's maxmemory (a full Redis refuses publishes)."))
    bridge_depth_check_interval_s: float = Field(1.0, gt=0, description="Between two reads of the queue depth.")
    bridge_shutdown_deadline_s: float = Field(20.0, gt=0, description=(
        "SIGTERM: to publish, confirm and commit what it holds; below compose's stop_grace_period (30 s)."))
    bridge_revoke_deadline_s: float = Field(10.0, gt=0, le=60, description=(
        "Rebalance: to publish and confirm what it holds of revoked partitions (above one publish's worst, 8.2 s)."))
    bridge_confirm_timeout_s: float = Field(60.0, gt=0, description=(
        "A batch not confirmed as stored (nor seen alive) by then is read again from Kafka; doubles per partition "
        "after each such rewind, up to 4x."))
    bridge_max_in_flight: int = Field(100, ge=2, description="Batches awaiting confirmation: the bridge pauses.")
    bridge_idle_flush_s: float = Field(1.0, gt=0, description="The source quiet this long, what it holds leaves.")
    bridge_poll_timeout_s: float = Field(0.5, gt=0, description="Of one Kafka poll.")
    bridge_max_dlq_ratio: float = Field(0.5, gt=0, le=1, description=(
        "Past this share of invalid events among the last BRIDGE_DLQ_MIN_EVENTS the bridges stop until "
        "`aggregator bridge resume`; 1.0 = off (docs/operating.md, \"Dead-letter guard\")."))
    bridge_dlq_min_events: int = Field(1000, ge=1, description="The guard's window: nothing is decided on fewer.")
    bridge_metrics_port: int = Field(0, ge=0, le=65535, description="The bridge's Prometheus /metrics; 0 = off.")


class TrendSettings(BaseModel):
    """The runs of each duration (docs/trends.md)."""

    trends_queue: str = Field("trends", min_length=1, description="Celery queue of the trend runs.")
    trend_chunk_size: int = Field(200, ge=1, description="DOIs per chord chunk.")
    trend_query_connections: int = Field(2, ge=1, le=16, description=(
        "PostgreSQL store: connections a chunk's query is split over (docs/benchmarks.md)."))
    trend_rollup: bool = Field(True, description=(
        "PostgreSQL store: runs the day rollup can serve (`year`) read whole days from it (docs/trends.md)."))
    trend_rollup_min_events: int = Field(2000, ge=0, description=(
        "A DOI with fewer events than this in the rollup reads its span raw (docs/benchmarks.md)."))
    trend_start_offset_s: int = Field(15, ge=0, description="After the cron minute, so late events arrive.")
    trend_durations: str = Field("{}", description=(
        "JSON overriding fields of the durations table, e.g. {\"currently\": {\"min_events\": 5}}."))
    trend_lock_ttl_s: int = Field(150, ge=10, description=(
        "A run's lease, renewed by each chunk and the finalize: below every period, above their time limits."))

    @field_validator("trend_durations")
    @classmethod
    def _durations(cls, value: str) -> str:
        for duration in build_durations(value).values():
            try:
                min_period_s(duration.schedule)
            except ValueError as error:
                raise ValueError(f"{duration.name}: schedule {duration.schedule!r}: {error}") from None
        return value

    def durations(self) -> dict[str, Duration]:
        """The durations table with this environment's overrides (validated at start)."""
        return build_durations(self.trend_durations)


class MaintenanceSettings(BaseModel):
    """Retention and trend history: the maintenance task and `aggregator maintain` (worker/core/retention.py)."""

    event_retention_days: int = Field(400, ge=1, description=(
        "Events in PostgreSQL, dropped a month partition at a time. At least the longest span plus a day."))
    trend_history_full_days: int = Field(7, ge=1, description="trending_history keeps every run's rows ...")
    trend_history_hourly_days: int = Field(35, ge=1, description="... then the last of each hour per DOI ...")
    trend_history_retention_days: int = Field(400, ge=1, description="... then the last of each day; no older.")
    maintenance_schedule: str = Field("17 * * * *", description="Cron (UTC): a minute in which no run starts.")


class PostSettings(BaseModel):
    """The morning post on X: any X credential not set = a dry run (the text is logged)."""

    post_schedule: str = Field("59 5 * * *", description="Cron (UTC).")
    trending_url: str = Field("https://bit.ly/3jdLvc8", description="The trending page, linked in the post.")
    x_consumer_key: SecretStr | None = Field(None, description="The X app's API key.")
    x_consumer_secret: SecretStr | None = Field(None, description="The X app's API key secret.")
    x_access_token: SecretStr | None = Field(None, description="The posting account's access token.")
    x_access_token_secret: SecretStr | None = Field(None, description="The posting account's access token secret.")
    x_api_base_url: str | None = Field(None, description="Only for tests against a local recorder.")


class MonitoringSettings(BaseModel):
    """Metrics, health and logs."""

    exporter_port: int = Field(9109, ge=1, le=65535, description="`aggregator exporter`: the product's state.")
    alertmanager_url: str | None = Field(None, description="`health alerts` asks it whether its receivers deliver.")
    worker_metrics_port: int = Field(0, ge=0, le=65535, description=(
        "A worker's own counters; 0 = off. Needs PROMETHEUS_MULTIPROC_DIR."))
    prometheus_multiproc_dir: str | None = Field(None, description="An empty directory of the worker's own.")
    health_max_ingest_lag: int = Field(1_000_000, ge=1, description=(
        "Unstored events of KAFKA_TOPIC past which `aggregator health lag` fails."))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description=(
        "DEBUG, INFO, WARNING or ERROR (also Celery's --loglevel in compose)."))
    log_format: Literal["kv", "json"] = Field("kv", description="kv (key=value lines) or json.")


# Listed last group first: pydantic orders the fields from the last base up, so they (and
# .env.example, the docs' table and the error messages) read from ConnectionSettings down.
class Settings(MonitoringSettings, PostSettings, MaintenanceSettings, TrendSettings, BridgeSettings, IngestSettings,
               CelerySettings, StoreSettings, KafkaSettings, ConnectionSettings, BaseSettings):
    """All settings; the environment variable is the field name in upper case (a secret's
    also ``<NAME>_FILE``, naming a file that holds it: :class:`SecretFiles`)."""

    # A blank variable (`X_ACCESS_TOKEN=` in an env file) means "not set": the code default.
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", "result_backend_url", "postgres_dsn", mode="before")
    @classmethod
    def _connection_string(cls, value: object, info: ValidationInfo) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(raw, str):
            return value
        (_check_postgres_dsn if info.field_name == "postgres_dsn" else _check_redis_url)(raw.strip())
        return raw.strip()

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object, info: ValidationInfo) -> object:
        """A blank optional setting (an empty secret file) is not set."""
        blank = isinstance(value, str) and not value.strip()
        return None if blank and info.field_name and cls.model_fields[info.field_name].default is None else value

    @field_validator("influxdb_v2_url", "x_api_base_url", "trending_url", "alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        _ = parts.port
        return value

    @field_validator("post_schedule", "maintenance_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        parse_cron(value)  # ValueError names what is wrong
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = [f"{low.upper()} ({getattr(self, low):g}) {relation} {high.upper()} ({getattr(self, high):g}){why}"
                    for low, holds, relation, high, why in _ORDERED
                    if not holds(getattr(self, low), getattr(self, high))]
        problems += self._bounded_work_problems()
        if self.kafka_security_protocol.startswith("SASL_") and not (self.kafka_sasl_username
                                                                    and self.kafka_sasl_password):
            problems.append(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs KAFKA_SASL_USERNAME and "
                            "KAFKA_SASL_PASSWORD (or KAFKA_SASL_PASSWORD_FILE)")
        if self.postgres_password is not None and _password(self.postgres_dsn.get_secret_value()) is not None:
            # Neither wins silently: a stale password left in the DSN would be a login failure
            # (or a login as someone else) nobody could explain. Neither value is shown.
            problems.append("POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is set and POSTGRES_DSN holds a password "
                            "too: keep one (remove the password from the DSN, or unset POSTGRES_PASSWORD)")
        if self.redis_password is not None and any(_password(url.get_secret_value()) is not None
                                                   for url in (self.redis_url, self.result_backend)):
            problems.append("REDIS_PASSWORD (or REDIS_PASSWORD_FILE) is set and REDIS_URL or RESULT_BACKEND_URL "
                            "holds a password too: keep one")
        if self.redis_ca_cert is not None and not Path(self.redis_ca_cert).is_file():
            problems.append(f"REDIS_CA_CERT ({self.redis_ca_cert}) is not a file")
        if self.worker_metrics_port and not self.prometheus_multiproc_dir:
            problems.append(f"WORKER_METRICS_PORT ({self.worker_metrics_port}) needs PROMETHEUS_MULTIPROC_DIR: an "
                            "empty directory of the worker's own, where its pool processes keep their values")
        # Whatever the store: the maintenance worker manages discussion_event's partitions regardless.
        problems += self.retention_policy().problems(max(d.span_s for d in self.durations().values()))
        if self.event_store == "influxdb":
            missing = [name.upper() for name in ("influxdb_v2_url", "influxdb_v2_token", "influxdb_v2_org")
                       if not getattr(self, name)]
            if missing:
                problems.append(f"EVENT_STORE=influxdb needs {', '.join(missing)}")
            else:
                # The layout's own rules (retention, distinct bucket names): fail at start, not in setup.
                try:
                    Layout.of(measurement=self.influxdb_measurement, events_bucket=self.influxdb_v2_bucket,
                              events_retention_days=self.influxdb_v2_retention_days,
                              prefix=self.influxdb_bucket_prefix, durations=self.durations())
                except LayoutError as error:
                    problems.append(str(error))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _bounded_work_problems(self) -> list[str]:
        """The time limits, the lease and the schedules must nest, or a live run loses its
        lease (another run then starts beside it) or a dead run's lease outlives the next tick."""
        problems = []
        ttl = self.trend_lock_ttl_s
        for name, limit in (("TASK_TIME_LIMIT_CHUNK_S", self.task_time_limit_chunk_s),
                            ("TASK_TIME_LIMIT_FINALIZE_S", self.task_time_limit_finalize_s)):
            if limit >= ttl:
                problems.append(f"{name} ({limit:g}) must be below TREND_LOCK_TTL_S ({ttl}): a run renews its "
                                "lease once per chunk and at the finalize")
        for duration in self.durations().values():
            period = min_period_s(duration.schedule)
            if ttl >= period:
                problems.append(f"TREND_LOCK_TTL_S ({ttl}) must be below the period of {duration.name} "
                                f"({period} s, schedule {duration.schedule!r}): a dead run's lease must be gone "
                                "by the next run")
        return problems

    def retention_policy(self) -> RetentionPolicy:
        """What the maintenance task keeps (``worker.core.retention``)."""
        return RetentionPolicy(self.event_retention_days, self.trend_history_full_days,
                               self.trend_history_hourly_days, self.trend_history_retention_days)

    def secret_values(self) -> list[str]:
        """Every credential this process knows (of a connection string, its password), for
        scrubbing text a person will read."""
        secrets = {name: secret.get_secret_value() for name in secret_fields(Settings)
                   if (secret := getattr(self, name)) is not None}
        values = [_password(value) if name in _CONNECTION_STRINGS else value for name, value in secrets.items()]
        return [value for value in values if value]

    def addresses(self) -> dict[str, str]:
        """Where each service is, as an operator may read it (passwords masked)."""
        return {
            "PostgreSQL": mask_dsn(self.postgres_dsn.get_secret_value()),
            "Redis": mask_url(self.redis_url.get_secret_value()),
            "Kafka": self.kafka_bootstrap_servers,
            "InfluxDB": self.influxdb_v2_url or "(INFLUXDB_V2_URL not set)",
        }


#: Settings that must be ordered: (lower, holds, relation, higher, why).
_ORDERED: tuple[tuple[str, Callable[[float, float], bool], str, str, str], ...] = (
    ("bridge_queue_low_watermark", operator.lt, "must be below", "bridge_queue_high_watermark", ""),
    ("bridge_min_batch", operator.le, "must not exceed", "bridge_max_batch", ""),
    ("ingest_retry_backoff_s", operator.le, "must not exceed", "ingest_retry_backoff_max_s", ""),
    # A waiting batch signs life at each attempt; a longer gap looks like a lost batch.
    ("ingest_retry_backoff_max_s", lambda low, high: low + 10 <= high, "must be at least 10 s below",
     "bridge_confirm_timeout_s", ""),
    # A retry waits in Redis as an unacked ETA message: past the visibility timeout Redis
    # hands it out a second time.
    ("ingest_retry_backoff_max_s", operator.lt, "must be below", "visibility_timeout_s", ""),
    ("task_time_limit_ingest_s", operator.lt, "must be below", "visibility_timeout_s",
     ": Redis would hand a running batch out again"),
)
_SECRET_FIELDS = set(secret_fields(Settings))
# Of a connection string only the password is secret: it is shown masked (the rest is what is
# wrong) and scrubbed.
_CONNECTION_STRINGS = ("postgres_dsn", "redis_url", "result_backend_url")


def _shown(name: str, value: object) -> str:
    if name in _CONNECTION_STRINGS and isinstance(value, str):
        return repr(mask_dsn(value))
    return "'***'" if name in _SECRET_FIELDS else repr(value)


def load_settings() -> Settings:
    """Read and validate the environment; when it is wrong, exit with one line per problem,
    naming the variable and showing its value (secrets masked)."""
    try:
        return Settings()
    except ValidationError as error:
        lines = []
        for item in error.errors():
            message = item["msg"].removeprefix("Value error, ")
            if not item["loc"]:  # a rule between settings: the message names them
                lines.extend(message.split("; "))
                continue
            name = ".".join(str(part) for part in item["loc"])
            lines.append(f"{name.upper()}={_shown(name, item.get('input'))}: {message}")
        raise ConfigurationError("invalid configuration: " + "\n".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after patching)."""
    return load_settings()
