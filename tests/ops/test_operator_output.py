"""What an operator reads: masked credentials, classified failures, librdkafka without floods."""

from __future__ import annotations

import logging

import psycopg2
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st

from worker.config.settings import Settings
from worker.core.masking import mask_dsn, mask_url, scrub
from worker.ingest.kafka_config import RepeatFilter, client_config
from worker.ops.failures import EX_CONFIG, EX_SOFTWARE, EX_UNAVAILABLE, classify, exit_code

pytestmark = pytest.mark.unit

PASSWORD = "s3cr3t-Pa55"


@pytest.mark.parametrize(("dsn", "masked"), [
    (f"postgresql://agg:{PASSWORD}@db:5432/agg", "postgresql://agg:***@db:5432/agg"),
    (f"host=db user=agg password={PASSWORD} dbname=agg", "host=db user=agg password=*** dbname=agg"),
    (f"host=db password='{PASSWORD} with space' dbname=agg", "host=db password=*** dbname=agg"),
    ("postgresql://agg@db/agg", "postgresql://agg@db/agg"),
    (f"redis://:{PASSWORD}@redis:6379/0", "redis://:***@redis:6379/0"),
])
def test_connection_strings_are_masked(dsn: str, masked: str) -> None:
    assert mask_dsn(dsn) == masked
    assert PASSWORD not in mask_dsn(dsn)


def test_an_unparsable_url_is_still_masked() -> None:
    assert PASSWORD not in mask_url(f"redis://:{PASSWORD}@host:99999x/0")


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=4, max_size=30))
def test_scrub_removes_any_known_secret(secret: str) -> None:
    text = f"connection failed for <{secret}>; again <{secret}>"
    assert f"<{secret}>" not in scrub(text, [secret])


def test_settings_never_show_their_secrets() -> None:
    settings = Settings(_env_file=None, postgres_dsn=f"postgresql://agg:{PASSWORD}@db/agg",
                        redis_url=f"redis://:{PASSWORD}@redis:6379/0", influxdb_v2_token=PASSWORD,
                        x_consumer_secret=PASSWORD)
    for shown in (repr(settings), str(settings), str(settings.model_dump()), str(settings.addresses())):
        assert PASSWORD not in shown
    assert PASSWORD in settings.secret_values()


def _settings() -> Settings:
    return Settings(_env_file=None, postgres_dsn=f"postgresql://agg:{PASSWORD}@db:5432/agg",
                    kafka_bootstrap_servers="kafka:9092")


@pytest.mark.parametrize(("error", "code", "starts"), [
    (psycopg2.OperationalError('connection to server at "db" failed: Connection refused\n\tIs it running?'),
     EX_UNAVAILABLE, "PostgreSQL at postgresql://agg:***@db:5432/agg did not answer: connection to server"),
    (psycopg2.OperationalError('FATAL:  password authentication failed for user "agg"'), EX_CONFIG,
     "PostgreSQL at postgresql://agg:***@db:5432/agg refused the login"),
    (redis.ConnectionError("Error 111 connecting to redis:6379. Connection refused."), EX_UNAVAILABLE,
     "Redis at redis://127.0.0.1:6379/0 did not answer"),
    (redis.AuthenticationError("invalid username-password pair or user is disabled."), EX_CONFIG,
     "Redis at redis://127.0.0.1:6379/0 refused the login"),
    (KafkaException(KafkaError(KafkaError._TRANSPORT, "Failed to get metadata")), EX_UNAVAILABLE,
     "Kafka at kafka:9092 did not answer: Failed to get metadata"),
    (KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "no")), EX_SOFTWARE, "Kafka refused"),
    (ZeroDivisionError("oops"), EX_SOFTWARE, "unexpected error: ZeroDivisionError: oops"),
])
def test_failures_are_classified_by_the_library_that_raised_them(error: BaseException, code: int,
                                                                 starts: str) -> None:
    failure = classify(error, _settings())
    assert exit_code(failure) == code
    assert failure.lines()[0].startswith(starts), failure.lines()
    assert len(failure.lines()) <= 2 and all("\n" not in line for line in failure.lines()[1:])
    assert PASSWORD not in "\n".join(failure.lines())


def test_a_password_quoted_by_a_driver_is_scrubbed() -> None:
    failure = classify(psycopg2.OperationalError(f"could not connect with password {PASSWORD}"), _settings())
    assert PASSWORD not in failure.message


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_librdkafka_repeats_pass_once_per_window_then_are_counted() -> None:
    clock = Clock()
    repeat = RepeatFilter(window_s=300, clock=clock)

    def record(text: str) -> logging.LogRecord:
        return logging.LogRecord("kafka", logging.ERROR, __file__, 1, text, (), None)

    lines = [f"FAIL [rdkafka#consumer-2] Connect to ipv4#127.0.0.1:9092 failed (after {i}ms in state CONNECT)"
             for i in range(200)]
    passed = [repeat.filter(record(line)) for line in lines]
    assert passed.count(True) == 1, "200 identical failures (but for a number) are one line"
    assert repeat.filter(record("another message entirely"))
    clock.now = 301
    again = record(lines[0])
    assert repeat.filter(again) and again.__dict__["repeated"] == 199  # the next window says how many were held


def test_every_kafka_client_logs_through_the_product() -> None:
    config = client_config("kafka:9092", {"group.id": "g"}, timeout_s=3)
    assert config["logger"].name == "kafka" and config["group.id"] == "g"
    assert config["socket.timeout.ms"] == 3000 and config["log.connection.close"] is False
