"""Kafka that requires TLS, or SASL: every client of the product takes KAFKA_SECURITY_PROTOCOL,
KAFKA_SASL_* and KAFKA_SSL_CA_LOCATION (Settings.kafka_connection()).

TLS end to end: the bridge consumes, the worker stores, setup's topic creation, the dead-letter
producer, and the health and lag checks all go through a TLS front before Tansu
(tests/support/tls_front.py says why a front). SASL: Tansu 0.6.0 with ``--authentication``
offers SCRAM only and keeps its users in storage it cannot be given before it refuses every
unauthenticated request (its in-memory store starts empty), so no login can succeed here; what
is tested is that the settings reach librdkafka and the broker checks them: it answers the
SCRAM exchange with unknown-user, and a PLAIN client is refused its mechanism.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException

from tests.support.devstack.services import KafkaBroker
from tests.support.helpers import AGGREGATOR, count_events, log_text, start_worker, wait_for
from tests.support.tls_front import TlsFront, make_certificates
from worker.config.settings import Settings, get_settings
from worker.ingest.deadletter import ensure_topic, replay_group
from worker.ingest.kafka_config import group_lag
from worker.ops.demo import demo_events, produce
from worker.ops.health import check

pytestmark = pytest.mark.integration


def _tls_broker(directory: Path, *, authentication: bool = False) -> Iterator[tuple[TlsFront, Path]]:
    ca, cert, key = make_certificates(directory / "certs")
    broker = KafkaBroker(directory / "tansu", authentication=authentication)
    front = TlsFront(broker.port, cert, key).start()
    broker.advertised_port = front.port
    broker.start()
    try:
        yield front, ca
    finally:
        broker.stop()
        front.stop()


@pytest.fixture(scope="module")
def tls_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsFront, Path]]:
    yield from _tls_broker(tmp_path_factory.mktemp("tls-kafka"))


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsFront, Path]]:
    yield from _tls_broker(tmp_path_factory.mktemp("sasl-kafka"), authentication=True)


def test_the_bridge_consumes_and_the_checks_answer_through_tls(
        tls_kafka: tuple[TlsFront, Path], env: dict[str, str], spawn, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    front, ca = tls_kafka
    env = {**env, "KAFKA_BOOTSTRAP_SERVERS": front.bootstrap, "KAFKA_SECURITY_PROTOCOL": "SSL",
           "KAFKA_SSL_CA_LOCATION": str(ca)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    settings = get_settings()
    ensure_topic(settings.kafka_connection(), settings.kafka_topic, 2, timeout_s=5)
    events = [*demo_events(300, 10, seed=7), b"not an event"]  # the last one for the dead-letter producer
    assert produce(settings.kafka_connection(), settings.kafka_topic, iter(events)) == 301
    start_worker(spawn, env)
    bridge = spawn([*AGGREGATOR, "bridge"], env, "bridge")  # creates the dead-letter topic first, through TLS
    wait_for(lambda: count_events(env["POSTGRES_DSN"]) == 300 or bridge.poll() is not None, 90, "300 stored")
    assert bridge.poll() is None, log_text(bridge)[-3000:]
    wait_for(lambda: group_lag(settings.kafka_connection(), settings.kafka_topic, settings.kafka_group_id) == 0,
             30, "the bridge's offsets committed")
    assert group_lag(settings.kafka_connection(), settings.kafka_dlq_topic, replay_group(settings.kafka_group_id)) == 1
    assert check(["bridge", "lag"], settings=settings) == 0
    out = capsys.readouterr().out
    assert f"ok   kafka      {front.bootstrap} topic {settings.kafka_topic}: 2 partition(s)" in out
    assert f"0 event(s) of {settings.kafka_topic} not stored yet" in out


def test_a_broker_no_trusted_ca_signed_is_refused(tls_kafka: tuple[TlsFront, Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Without KAFKA_SSL_CA_LOCATION the system's CAs decide, and none of them signed the test CA;
    a client that does not speak TLS at all is refused as well."""
    front, ca = tls_kafka
    with_ca = Settings(kafka_bootstrap_servers=front.bootstrap, kafka_security_protocol="SSL",
                       kafka_ssl_ca_location=str(ca))
    for settings in (with_ca.model_copy(update={"kafka_ssl_ca_location": None}),
                     with_ca.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})):
        assert check("lag", settings=settings) == 1
        assert "FAIL lag" in capsys.readouterr().out


@pytest.mark.parametrize(("mechanism", "refusal"), [
    ("SCRAM-SHA-512", "SASL SCRAM authentication failed: broker responded with unknown-user"),
    ("SCRAM-SHA-256", "SASL SCRAM authentication failed: broker responded with unknown-user"),
    ("PLAIN", "SASL PLAIN mechanism handshake failed"),
])
def test_sasl_credentials_reach_a_broker_that_checks_them(
        sasl_kafka: tuple[TlsFront, Path], mechanism: str, refusal: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    front, ca = sasl_kafka
    monkeypatch.setattr(logging.getLogger("kafka"), "filters", [])  # a fresh RepeatFilter: each test sees its line
    settings = Settings(kafka_bootstrap_servers=front.bootstrap, kafka_security_protocol="SASL_SSL",
                        kafka_ssl_ca_location=str(ca), kafka_sasl_mechanism=mechanism,
                        kafka_sasl_username="aggregator", kafka_sasl_password="not-a-user-of-this-broker")
    with caplog.at_level(logging.WARNING, logger="kafka"), pytest.raises(KafkaException):
        group_lag(settings.kafka_connection(), "events", "group", timeout_s=3)
    assert refusal in caplog.text
