"""Typed configuration read from the environment.

Every process (bridge, workers, beat, CLI) reads the same variables, so a container only
needs an env file. Values are validated once at start; a bad value stops the process with a
message that names the variable, instead of failing later in the middle of a batch.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConfigurationError(SystemExit):
    """Raised (and exits the process) when the environment holds an invalid setting."""


class Settings(BaseSettings):
    """All settings; the environment variable is the field name in upper case."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    # --- Redis: Celery broker and result backend -------------------------------------
    redis_url: str = "redis://127.0.0.1:6379/0"
    result_backend_url: str | None = None  # defaults to redis_url
    # Unacked messages are redelivered after this; keep it above the longest task, the
    # longest retry countdown and the trend chord (NOTES: celery#5935).
    visibility_timeout_s: int = Field(7200, ge=1)

    # --- Kafka --------------------------------------------------------------------------
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic: str = "events_processed-discusses"
    kafka_group_id: str = "trend-aggregator"
    # Consumer session timeout; a new group's first join can wait up to about half of it.
    kafka_session_timeout_ms: int = Field(10_000, ge=1000)
    # librdkafka's prefetch ceiling (queued.max.messages.kbytes): the bridge's memory peak
    # while it reads a backlog. librdkafka's own default is 64 MiB; 16 MiB still holds
    # ~30,000 events, a second of the fastest ingest measured here.
    kafka_prefetch_kbytes: int = Field(16_384, ge=1024, le=2_097_151)
    kafka_dlq_topic: str = "events_processed-discusses.dlq"
    # Partition count used when the product creates the dead-letter topic itself.
    kafka_dlq_partitions: int = Field(1, ge=1)

    # --- Event store ----------------------------------------------------------------------
    event_store: Literal["postgres", "influxdb"] = "postgres"
    postgres_dsn: str = "postgresql://aggregator:aggregator@127.0.0.1:5432/aggregator"
    influxdb_v2_url: str | None = None
    influxdb_v2_token: str | None = None
    influxdb_v2_org: str = "amba"
    influxdb_v2_bucket: str = "currently"  # the raw events; amba's streams API reads them as `currently`
    influxdb_v2_retention_days: int = Field(400, ge=0)  # 0 = keep for ever
    influxdb_v2_timeout_ms: int = Field(30_000, ge=1000)

    # --- InfluxDB layout (amba) -------------------------------------------------------------
    # The buckets, measurement and tasks amba's streams API reads (worker/store/layout.py;
    # README "Living in an amba system (InfluxDB)"). Prefix of every bucket and task name the
    # product manages besides INFLUXDB_V2_BUCKET: `<prefix>today`..`<prefix>year`,
    # `<prefix>numbers`, `<prefix>trending_<duration>`, `<prefix>task_...`. Empty in an amba
    # system (the streams API reads fixed names); set it to run a second copy beside one.
    influxdb_bucket_prefix: str = Field("", pattern=r"^([A-Za-z0-9][A-Za-z0-9_.-]*)?$")
    # Measurement of the events, the downsampled windows and the trend rows.
    influxdb_measurement: str = Field("trending", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

    # --- Ingest queue ----------------------------------------------------------------------
    ingest_queue: str = "ingest"
    # Celery rate limit of the ingest task, per worker process (e.g. "10/s", "600/m").
    ingest_rate_limit: str = "20/s"
    ingest_max_retries: int = Field(8, ge=0)
    ingest_retry_backoff_s: float = Field(2.0, gt=0)
    ingest_retry_backoff_max_s: float = Field(300.0, gt=0)

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
    bridge_poll_timeout_s: float = Field(0.5, gt=0)
    bridge_metrics_port: int = Field(0, ge=0, le=65535)  # 0 = no metrics endpoint

    # --- Trends -----------------------------------------------------------------------------
    trends_queue: str = "trends"
    trend_chunk_size: int = Field(200, ge=1)
    trend_start_offset_s: int = Field(15, ge=0)
    # JSON object overriding fields of the durations table, e.g.
    # {"currently": {"min_events": 5}, "year": {"schedule": "4 3 * * *"}}
    trend_durations: str = "{}"
    trend_lock_ttl_s: int = Field(3600, ge=10)

    # --- Morning post ---------------------------------------------------------------------
    post_schedule: str = "59 5 * * *"
    trending_url: str = "https://bit.ly/3jdLvc8"
    x_consumer_key: str | None = None
    x_consumer_secret: str | None = None
    x_access_token: str | None = None
    x_access_token_secret: str | None = None
    x_api_base_url: str | None = None  # only for tests against a local recorder

    # --- Logging ----------------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["kv", "json"] = "kv"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def result_backend(self) -> str:
        return self.result_backend_url or self.redis_url


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]).upper()
        lines.append(f"  {name}={item.get('input')!r}: {item['msg']}")
    return "invalid configuration in the environment:\n" + "\n".join(lines)


def load_settings() -> Settings:
    """Read and validate the environment; exit with a readable message when it is wrong."""
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` after patching)."""
    return load_settings()
