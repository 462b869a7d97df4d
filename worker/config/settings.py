"""Typed configuration read from the environment, validated in one place at start.

Every process (bridge, workers, beat, CLI) reads the same variables, so a container only
needs its environment. Everything is checked when the process starts — URLs and DSNs
parse, rate limits have Celery's syntax, bounds are ordered, the InfluxDB store has its
URL, token and org, crons are crons — so a wrong value stops the process with a message
naming the variable instead of failing later as a crashed worker in the middle of a batch.

Credentials (the PostgreSQL DSN, the Redis URLs, the InfluxDB token, the X keys) are
pydantic ``SecretStr``: their ``repr`` and ``str`` are masked, and code that needs the
value says so with ``.get_secret_value()`` at the one place it hands it to a driver.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
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
    """The environment holds an invalid setting.

    A ``SystemExit``: a Celery worker or beat that imports a bad configuration stops with
    this message instead of a traceback; the ``aggregator`` command catches it and exits 78.
    """


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

    if "://" in value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL or a libpq keyword string (host=... dbname=...)")
    try:
        parsed = parse_dsn(value)
    except ProgrammingError as error:
        raise ValueError(str(error).strip().splitlines()[0]) from None
    port = parsed.get("port")
    if port is not None and not all(p.isdigit() for p in port.split(",")):
        raise ValueError(f"port {port!r} is not a number")


def _dsn_password(value: str) -> str | None:
    """The password a PostgreSQL DSN (URL or keywords) holds, if any."""
    from psycopg2.extensions import parse_dsn

    password: str | None = parse_dsn(value).get("password")
    return password


def _check_rate_limit(value: str) -> str:
    match = _RATE.match(value)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError("must be a Celery rate limit: a positive number of tasks per second, "
                         "or N/s, N/m, N/h (e.g. 20/s)")
    number, unit = match.groups()
    return f"{number}/{unit or 's'}"


def _check_bootstrap(value: str) -> str:
    servers = [part.strip() for part in value.split(",") if part.strip()]
    if not servers:
        raise ValueError("needs at least one host:port")
    for server in servers:
        match = _HOST_PORT.match(server)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise ValueError(f"{server!r} is not host:port (e.g. kafka:9092)")
    return ",".join(servers)


def secret_fields(settings_cls: type[BaseSettings]) -> list[str]:
    """The secret settings (typed ``SecretStr``), in declaration order: each may come from a
    ``<NAME>_FILE``, and ``setup`` refuses .env.example's placeholder in any of them."""
    return [name for name, field in settings_cls.model_fields.items() if "SecretStr" in str(field.annotation)]


class SecretFiles(PydanticBaseSettingsSource):
    """Every secret setting from a file: ``POSTGRES_DSN_FILE=/run/secrets/postgres_dsn``.

    Docker and Kubernetes hand secrets over as files so they never show in ``docker
    inspect`` or a process's environment. The file's text is the value (one trailing newline
    dropped); a variable set both ways is refused, as a file that cannot be read is: either
    would leave an operator guessing which value the process uses.
    """

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


class Settings(BaseSettings):
    """All settings; the environment variable is the field name in upper case (a secret's
    also ``<NAME>_FILE``, naming a file that holds it: :class:`SecretFiles`)."""

    # A blank variable (`X_ACCESS_TOKEN=` in an env file) means "not set": the code default.
    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True)

    # --- Redis: Celery broker and result backend -------------------------------------
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    result_backend_url: SecretStr | None = None  # defaults to redis_url
    # Unacked messages are redelivered after this; keep it above the longest task, the
    # longest retry countdown and the trend chord (NOTES: celery#5935).
    visibility_timeout_s: int = Field(7200, ge=1)
    # A worker process refreshes a heartbeat key with this TTL; when it is gone, the others
    # put the deliveries it held back in their queues (worker/celeryapp/liveness.py): a
    # dead worker's batches come back within this plus a fifth of it, not the above.
    worker_heartbeat_ttl_s: float = Field(10.0, ge=1, le=600)

    # --- Every service ---------------------------------------------------------------------
    # How long a process waits for a service (PostgreSQL, Redis, Kafka, InfluxDB) to answer
    # before it calls it unreachable: a connection that is accepted but never answered must
    # end in an error an operator can read, not in a process that hangs for ever.
    connect_timeout_s: float = Field(10.0, ge=0.5, le=300)

    # --- Kafka --------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = Field("events_processed-discusses", min_length=1)
    kafka_group_id: str = Field("trend-aggregator", min_length=1)
    # Consumer session timeout: a bridge that dies without leaving the group (SIGKILL, a lost
    # host) keeps its partitions this long before the others take them over (measured: this
    # plus about 3 s here). A new group's first join can wait up to about half of it.
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    # librdkafka's prefetch ceiling (queued.max.messages.kbytes): the bridge's memory peak
    # while it reads a backlog. librdkafka's own default is 64 MiB; 16 MiB still holds
    # ~30,000 events, a second of the fastest ingest measured here.
    kafka_prefetch_kbytes: int = Field(16_384, ge=1024, le=2_097_151)
    kafka_dlq_topic: str = Field("events_processed-discusses.dlq", min_length=1)
    # Partition count used when the product creates the dead-letter topic itself.
    kafka_dlq_partitions: int = Field(1, ge=1)
    # `aggregator dlq replay`: a letter still invalid is appended again (attempt + 1) while its
    # attempts stay within this; past it, it is parked (logged with a copy, not appended), so
    # a letter that cannot succeed stops coming back. The bridge's first failure is attempt 1.
    dlq_max_attempts: int = Field(3, ge=1)

    # --- Event store ----------------------------------------------------------------------
    event_store: Literal["postgres", "influxdb"] = "postgres"
    postgres_dsn: SecretStr = SecretStr("postgresql://aggregator:aggregator@127.0.0.1:5432/aggregator")
    # The password apart from the DSN (with a DSN that has none): a secret file of its own
    # (POSTGRES_PASSWORD_FILE, a Docker secret) while the DSN, host and role stay plain
    # configuration. worker/db/connection.py adds it to the DSN; both at once is refused.
    postgres_password: SecretStr | None = None
    influxdb_v2_url: str | None = None
    influxdb_v2_token: SecretStr | None = None
    influxdb_v2_org: str = "amba"
    influxdb_v2_bucket: str = "currently"  # the raw events; amba's streams API reads them as `currently`
    influxdb_v2_retention_days: int = Field(400, ge=0)  # 0 = keep for ever
    influxdb_v2_timeout_ms: int = Field(30_000, ge=1000)

    # --- InfluxDB layout (amba) -------------------------------------------------------------
    # The buckets, measurement and tasks amba's streams API reads (worker/core/influx_layout.py;
    # README "Living in an amba system (InfluxDB)"). Prefix of every bucket and task name the
    # product manages besides INFLUXDB_V2_BUCKET: `<prefix>today`..`<prefix>year`,
    # `<prefix>numbers`, `<prefix>trending_<duration>`, `<prefix>task_...`. Empty in an amba
    # system (the streams API reads fixed names); set it to run a second copy beside one.
    influxdb_bucket_prefix: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")
    # Measurement of the events, the downsampled windows and the trend rows.
    influxdb_measurement: str = Field("trending", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    # --- Ingest queue ----------------------------------------------------------------------
    ingest_queue: str = Field("ingest", min_length=1)
    # Batches written to the event store per second (or N/m, N/h), by ALL ingest workers
    # together: a token bucket in Redis shared by every worker (worker/ingest/write_limit.py),
    # holding one second's worth (at least one token) as its burst.
    ingest_rate_limit: str = "20/s"
    # How long a batch waits for an unavailable event store (retrying with backoff) before it
    # goes to the dead letters: outages are measured in time, not in retries. Meanwhile the
    # bridge pauses (its batches are not confirmed) and Kafka holds the data.
    ingest_outage_tolerance_s: float = Field(3600.0, gt=0)
    ingest_retry_backoff_s: float = Field(2.0, gt=0)
    # The longest wait between two attempts; each attempt tells the bridge the batch is alive.
    ingest_retry_backoff_max_s: float = Field(30.0, gt=0)

    # --- Bridge: dynamic ceiling and backpressure ------------------------------------------
    # A batch is published about every `bridge_target_interval_s` whatever the incoming
    # rate: ceiling = smoothed rate x interval, clamped to [min, max] events.
    bridge_target_interval_s: float = Field(5.0, gt=0)
    bridge_rate_half_life_s: float = Field(60.0, gt=0)
    bridge_min_batch: int = Field(1, ge=1)
    bridge_max_batch: int = Field(5000, ge=1)
    bridge_max_batch_age_s: float = Field(10.0, gt=0)
    bridge_max_batch_bytes: int = Field(4_000_000, ge=10_000)
    bridge_hysteresis: float = Field(0.25, ge=0, lt=1)
    bridge_queue_high_watermark: int = Field(200, ge=1)
    bridge_queue_low_watermark: int = Field(50, ge=0)
    bridge_depth_check_interval_s: float = Field(1.0, gt=0)
    bridge_shutdown_deadline_s: float = Field(20.0, gt=0)
    # A rebalance takes partitions away: the bridge publishes what it holds and waits for the
    # confirmations of the revoked partitions this long (what is not confirmed by then is read
    # again by the new owner). The moved partitions idle meanwhile; far below the consumer's
    # max.poll.interval.ms (300 s), which bounds a rebalance callback. 10 s fits one publish's
    # worst case (8.2 s: two 2 s Redis attempts and a retry) and the usual confirmation.
    bridge_revoke_deadline_s: float = Field(10.0, gt=0, le=60)
    # A published batch whose events are not confirmed as stored within this (nor its task
    # seen alive) is read again from Kafka and published again: Redis lost it, or its worker
    # died. Doubles per partition after each such rewind, up to 4x.
    bridge_confirm_timeout_s: float = Field(60.0, gt=0)
    # Published batches not yet confirmed as stored; at this many the bridge pauses.
    bridge_max_in_flight: int = Field(100, ge=2)
    # When the source goes quiet, what the bridge holds leaves after this many seconds.
    bridge_idle_flush_s: float = Field(1.0, gt=0)
    bridge_poll_timeout_s: float = Field(0.5, gt=0)
    bridge_metrics_port: int = Field(0, ge=0, le=65535)  # 0 = no metrics endpoint
    # Dead-letter guard: when more than this share of the last BRIDGE_DLQ_MIN_EVENTS events
    # were invalid, the bridges of the group stop consuming (Kafka keeps the rest) until
    # `aggregator bridge resume` or a restart with a changed value; 1.0 = off. A healthy
    # stream dead-letters about nothing (the DeadLetterRate alert fires at 1 %); a stream
    # over half invalid means the producer's format changed: stop after at most about
    # ratio x window dead letters instead of dead-lettering the whole stream.
    bridge_max_dlq_ratio: float = Field(0.5, gt=0, le=1)
    # The guard's window, counted in events (also the least evidence it decides on).
    bridge_dlq_min_events: int = Field(1000, ge=1)
    # `aggregator health lag` (the bridge's healthcheck) fails past this many events of
    # KAFKA_TOPIC not yet stored: a few minutes of the fastest ingest measured here.
    health_max_ingest_lag: int = Field(1_000_000, ge=1)

    # --- Metrics -------------------------------------------------------------------------------
    # `aggregator exporter`: the product's state (trend freshness and phases, queues, lag, dead
    # letters, the morning post), read at scrape time.
    exporter_port: int = Field(9109, ge=1, le=65535)
    # `aggregator health alerts` asks this Alertmanager whether its receivers deliver anywhere.
    alertmanager_url: str | None = None
    # A Celery worker's own counters (ingest writes, retries, skipped runs), summed over its
    # prefork children; 0 = none. Needs PROMETHEUS_MULTIPROC_DIR (an empty directory of its own).
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    prometheus_multiproc_dir: str | None = None

    # --- Trends -----------------------------------------------------------------------------
    trends_queue: str = Field("trends", min_length=1)
    trend_chunk_size: int = Field(200, ge=1)
    # PostgreSQL store: connections one chunk's trend query is split over, run at once (one
    # backend each, like PostgreSQL's own parallel query, max_parallel_workers_per_gather 2).
    # 1 = one backend per run, as before; the `year` run at scale takes 1.2x longer then
    # (README "Benchmarks").
    trend_query_connections: int = Field(2, ge=1, le=16)
    trend_start_offset_s: int = Field(15, ge=0)
    # JSON object overriding fields of the durations table, e.g.
    # {"currently": {"min_events": 5}, "year": {"schedule": "4 3 * * *"}}
    trend_durations: str = "{}"
    # The lease of a run on its duration, renewed by every chunk and the finalize step: a run
    # whose worker died frees its duration within this, and the next run takes over. Below
    # every duration's period (the next run must find it free), above the chunk's and the
    # finalize's time limits (a live run renews it in time).
    trend_lock_ttl_s: int = Field(150, ge=10)

    # --- Beat: one active scheduler, standbys wait (celery-redbeat) -------------------------
    # The active beat holds a Redis lock of this timeout and extends it every tick (at least
    # every fifth of it); a standby beat polls for it as often. When the active beat dies, a
    # standby fires within this plus a fifth of it. At most 90: the takeover must end within
    # beat's 120 s cron starting deadline, so the tick missed meanwhile is fired late, not lost.
    beat_lock_timeout_s: int = Field(60, ge=5, le=90)

    # --- Bounded work: Celery time limits per task kind (hard; the soft limit, which raises
    # in the task so it fails cleanly, is SOFT_TIME_LIMIT_RATIO of it) -------------------------
    # Measured here (docs/benchmarks.md): an ingest batch of 5000 events ~0.2 s, a `year`
    # chunk well under 1 s, its finalize and view refresh ~2 s at 10M events; the defaults
    # leave two orders of magnitude for a slow day, and stop a hung task instead of a worker.
    task_time_limit_ingest_s: float = Field(120.0, gt=1)
    task_time_limit_trend_run_s: float = Field(120.0, gt=1)  # plan: select and cut the DOIs
    task_time_limit_chunk_s: float = Field(120.0, gt=1)
    task_time_limit_finalize_s: float = Field(120.0, gt=1)  # finalize, view refresh; the errback
    task_time_limit_maintenance_s: float = Field(1800.0, gt=1)
    task_time_limit_post_s: float = Field(120.0, gt=1)

    # --- Bounded work: PostgreSQL timeouts per kind of session (0 = none) ------------------
    # A statement past its timeout, or a lock not granted in time, fails like an unreachable
    # store: an ingest batch is retried with backoff, a trend chunk or finalize fails its run
    # (the published rows stay, the lease is released). The maintenance DDL has its own short
    # lock timeouts (worker/db/partition_admin.py).
    pg_statement_timeout_ingest_s: float = Field(60.0, ge=0)
    pg_statement_timeout_trends_s: float = Field(60.0, ge=0)  # qualifying DOIs, a chunk's inputs
    pg_statement_timeout_finalize_s: float = Field(60.0, ge=0)  # each statement of the finalize
    pg_lock_timeout_s: float = Field(10.0, ge=0)

    # --- Operating for years: retention and trend history (PostgreSQL) --------------------
    # Carried out by the maintenance task (beat, queue `maintenance`) and `aggregator
    # maintain`; worker/core/retention.py explains each rule, README "Operating for
    # years" the storage it gives.
    # Events older than this many days are removed, a whole month partition at a time (so up
    # to a month later). At least the longest trend span plus a day. With EVENT_STORE=influxdb
    # the table stays empty: InfluxDB's bucket has its own retention (INFLUXDB_V2_RETENTION_DAYS).
    event_retention_days: int = Field(400, ge=1)
    # trending_history keeps every run's rows this many days; then, per DOI and duration, the
    # last row of each hour until TREND_HISTORY_HOURLY_DAYS, the last row of each day until
    # TREND_HISTORY_RETENTION_DAYS, and nothing older. 1 <= full <= hourly <= retention.
    trend_history_full_days: int = Field(7, ge=1)
    trend_history_hourly_days: int = Field(35, ge=1)
    trend_history_retention_days: int = Field(400, ge=1)
    # UTC cron of the maintenance task: partitions ahead, retention, thinning. Hourly, at a
    # minute in which no trend run starts.
    maintenance_schedule: str = "17 * * * *"

    # --- Morning post ---------------------------------------------------------------------
    post_schedule: str = "59 5 * * *"
    trending_url: str = "https://bit.ly/3jdLvc8"
    x_consumer_key: SecretStr | None = None
    x_consumer_secret: SecretStr | None = None
    x_access_token: SecretStr | None = None
    x_access_token_secret: SecretStr | None = None
    x_api_base_url: str | None = None  # only for tests against a local recorder

    # --- Logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["kv", "json"] = "kv"

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    # -- one field at a time ---------------------------------------------------------------
    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url", "result_backend_url", mode="before")
    @classmethod
    def _redis(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            _check_redis_url(raw.strip())
            return raw.strip()
        return value

    @field_validator("postgres_dsn", mode="before")
    @classmethod
    def _postgres(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(raw, str):
            _check_postgres_dsn(raw.strip())
            return raw.strip()
        return value

    @field_validator("influxdb_v2_token", "x_consumer_key", "x_consumer_secret", "x_access_token",
                     "x_access_token_secret", "influxdb_v2_url", "x_api_base_url", "postgres_password",
                     "alertmanager_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: str) -> str:
        return _check_bootstrap(value)

    @field_validator("ingest_rate_limit")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        return _check_rate_limit(value)

    @field_validator("post_schedule", "maintenance_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        parse_cron(value)  # ValueError names what is wrong
        return value

    @field_validator("trend_durations")
    @classmethod
    def _durations(cls, value: str) -> str:
        for duration in build_durations(value).values():
            try:
                min_period_s(duration.schedule)
            except ValueError as error:
                raise ValueError(f"{duration.name}: schedule {duration.schedule!r}: {error}") from None
        return value

    # -- settings that must agree -----------------------------------------------------------
    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        if self.bridge_queue_low_watermark >= self.bridge_queue_high_watermark:
            problems.append(f"BRIDGE_QUEUE_LOW_WATERMARK ({self.bridge_queue_low_watermark}) must be below "
                            f"BRIDGE_QUEUE_HIGH_WATERMARK ({self.bridge_queue_high_watermark})")
        if self.bridge_min_batch > self.bridge_max_batch:
            problems.append(f"BRIDGE_MIN_BATCH ({self.bridge_min_batch}) must not exceed "
                            f"BRIDGE_MAX_BATCH ({self.bridge_max_batch})")
        if self.ingest_retry_backoff_s > self.ingest_retry_backoff_max_s:
            problems.append(f"INGEST_RETRY_BACKOFF_S ({self.ingest_retry_backoff_s}) must not exceed "
                            f"INGEST_RETRY_BACKOFF_MAX_S ({self.ingest_retry_backoff_max_s})")
        if self.ingest_retry_backoff_max_s + 10 > self.bridge_confirm_timeout_s:
            # A waiting batch signs life at each attempt; a longer gap looks like a lost batch.
            problems.append(f"INGEST_RETRY_BACKOFF_MAX_S ({self.ingest_retry_backoff_max_s}) must be at least 10 s "
                            f"below BRIDGE_CONFIRM_TIMEOUT_S ({self.bridge_confirm_timeout_s})")
        if self.ingest_retry_backoff_max_s >= self.visibility_timeout_s:
            # A retry waits in Redis as an unacked ETA message: longer than the visibility
            # timeout and Redis hands it out a second time (NOTES: celery#5935).
            problems.append(f"INGEST_RETRY_BACKOFF_MAX_S ({self.ingest_retry_backoff_max_s}) must be below "
                            f"VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s})")
        problems += self._bounded_work_problems()
        if self.postgres_password is not None and _dsn_password(self.postgres_dsn.get_secret_value()) is not None:
            # Neither wins silently: a stale password left in the DSN would be a login failure
            # (or a login as someone else) nobody could explain. Neither value is shown.
            problems.append("POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is set and POSTGRES_DSN holds a password "
                            "too: keep one (remove the password from the DSN, or unset POSTGRES_PASSWORD)")
        if self.worker_metrics_port and not self.prometheus_multiproc_dir:
            problems.append(f"WORKER_METRICS_PORT ({self.worker_metrics_port}) needs PROMETHEUS_MULTIPROC_DIR: an "
                            "empty directory of the worker's own, where its pool processes keep their values")
        # Retention and history thinning (checked whatever the store: the maintenance worker
        # manages discussion_event's partitions and need not know which store is in use).
        problems += self.retention_policy().problems(max(d.span_s for d in self.durations().values()))
        if self.event_store == "influxdb":
            missing = [name for name, value in (("INFLUXDB_V2_URL", self.influxdb_v2_url),
                                                ("INFLUXDB_V2_TOKEN", self.influxdb_v2_token),
                                                ("INFLUXDB_V2_ORG", self.influxdb_v2_org)) if not value]
            if missing:
                problems.append(f"EVENT_STORE=influxdb needs {', '.join(missing)}")
            else:
                # The InfluxDB layout's own rules (retention covers the longest span plus a
                # day, distinct bucket names): checked here so they fail at start, not in setup.
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
        if self.task_time_limit_ingest_s >= self.visibility_timeout_s:
            problems.append(f"TASK_TIME_LIMIT_INGEST_S ({self.task_time_limit_ingest_s:g}) must be below "
                            f"VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}): Redis would hand a running batch "
                            "out again")
        return problems

    # -- derived values ------------------------------------------------------------------------
    @property
    def result_backend(self) -> SecretStr:
        return self.result_backend_url or self.redis_url

    def ingest_rate_per_s(self) -> float:
        """``INGEST_RATE_LIMIT`` in batches per second."""
        number, unit = self.ingest_rate_limit.split("/")
        return float(number) / {"s": 1, "m": 60, "h": 3600}[unit]

    def ingest_burst(self) -> float:
        """The shared bucket's capacity: one second's worth of writes, at least one."""
        return max(1.0, self.ingest_rate_per_s())

    def durations(self) -> dict[str, Duration]:
        """The durations table with this environment's overrides (validated at start)."""
        return build_durations(self.trend_durations)

    def retention_policy(self) -> RetentionPolicy:
        """What the maintenance task keeps (``worker.core.retention``)."""
        return RetentionPolicy(self.event_retention_days, self.trend_history_full_days,
                               self.trend_history_hourly_days, self.trend_history_retention_days)

    def secret_values(self) -> list[str]:
        """Every credential this process knows, for scrubbing text a person will read."""
        values: list[str] = []
        for secret in (self.influxdb_v2_token, self.x_consumer_key, self.x_consumer_secret, self.x_access_token,
                       self.x_access_token_secret):
            if secret is not None:
                values.append(secret.get_secret_value())
        for url in (self.redis_url, self.result_backend_url):
            if url is not None:
                password = urlsplit(url.get_secret_value()).password
                if password:
                    values.append(password)
        password = _dsn_password(self.postgres_dsn.get_secret_value())
        if password:
            values.append(password)
        if self.postgres_password is not None:
            values.append(self.postgres_password.get_secret_value())
        return values

    def addresses(self) -> dict[str, str]:
        """Where each service is, as an operator may read it (passwords masked)."""
        return {
            "PostgreSQL": mask_dsn(self.postgres_dsn.get_secret_value()),
            "Redis": mask_url(self.redis_url.get_secret_value()),
            "Kafka": self.kafka_bootstrap_servers,
            "InfluxDB": self.influxdb_v2_url or "(INFLUXDB_V2_URL not set)",
        }


_SECRET_FIELDS = {name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
# Connection strings are shown with only their password masked: the rest is what is wrong.
_MASKED_CONNECTION_STRINGS = {"postgres_dsn": mask_dsn, "redis_url": mask_url, "result_backend_url": mask_url}


def _shown(name: str, value: object) -> str:
    if name in _MASKED_CONNECTION_STRINGS and isinstance(value, str):
        return repr(_MASKED_CONNECTION_STRINGS[name](value))
    return "'***'" if name in _SECRET_FIELDS else repr(value)


def describe(error: ValidationError) -> list[str]:
    """One line per problem, naming the variable and showing its value (secrets masked)."""
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a rule between settings: the message names them
            lines.extend(message.split("; "))
            continue
        name = ".".join(str(part) for part in item["loc"])
        lines.append(f"{name.upper()}={_shown(name, item.get('input'))}: {message}")
    return lines


def load_settings() -> Settings:
    """Read and validate the environment; exit with a readable message when it is wrong."""
    try:
        return Settings()
    except ValidationError as error:
        problems = describe(error)
        raise ConfigurationError("invalid configuration: " + "\n".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after patching)."""
    return load_settings()
