"""The product on a Redis that refuses a client without the password or without TLS.

A redis-server of the test's own whose default user is off: only the ACL user ``aggregator``
with its password, on a TLS port whose certificate a throwaway CA signed. The product is told
the password by a file (REDIS_PASSWORD_FILE) and the CA by REDIS_CA_CERT; the bridge publishes,
the worker stores and confirms (the offsets are committed), through the shared write limit;
beat holds its lock; Flower reads the queues; the result backend keeps a result; the exporter
and `aggregator health` report it up.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support.devstack.services import RedisServer, free_port, make_certificates
from tests.support.fault_harness import CELERY, Stage, wait
from tests.support.helpers import AGGREGATOR
from worker.celeryapp.beat import BEAT_LOCK_KEY
from worker.celeryapp.liveness import REGISTRY
from worker.config.settings import Settings
from worker.ingest.write_limit import bucket_key
from worker.ops.demo import demo_events
from worker.ops.exporter import StateCollector

pytestmark = pytest.mark.e2e

PASSWORD = "s3cret/with:odd@chars"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", password=PASSWORD, tls=make_certificates(tmp_path / "tls")).start()
    yield server
    server.stop()


def test_the_product_on_a_redis_with_a_password_and_tls(env: dict[str, str], secured: RedisServer,
                                                         tmp_path: Path) -> None:
    assert secured.tls is not None
    ca = str(secured.tls / "ca.crt")
    with pytest.raises(redis.AuthenticationError):  # no password: refused
        redis.Redis.from_url(secured.url, ssl_ca_certs=ca, socket_timeout=2).ping()
    with pytest.raises(redis.ConnectionError):  # no TLS: refused
        redis.Redis.from_url(secured.url.replace("rediss:", "redis:"), password=PASSWORD, socket_timeout=2).ping()
    admin = redis.Redis.from_url(secured.url, password=PASSWORD, ssl_ca_certs=ca, socket_timeout=2)

    password_file = tmp_path / "redis_password"
    password_file.write_text(PASSWORD + "\n")
    flower_port = free_port()
    stage = Stage({**env, "REDIS_URL": secured.url, "REDIS_PASSWORD_FILE": str(password_file), "REDIS_CA_CERT": ca,
                   "FLOWER_UNAUTHENTICATED_API": "true"}, tmp_path)
    try:
        stage.start_worker()
        stage.start_bridge()
        stage.start_beat()
        stage.supervisor.start("flower", [*CELERY, "flower", f"--port={flower_port}", "--address=127.0.0.1"],
                               stage.env, tmp_path / "flower.log")
        stage.produce(list(demo_events(300, 20, seed=27)))
        wait(stage.all_stored, 90, "every event stored")
        wait(lambda: stage.committed() == 300, 60, "every offset committed (the worker's confirmations read)")
        assert admin.exists(bucket_key("ingest")), "the write limit fell back to a bucket of its own"
        assert admin.scard(REGISTRY) == 1, "the worker's heartbeat (worker/celeryapp/liveness.py) is not in Redis"
        wait(lambda: bool(admin.exists(BEAT_LOCK_KEY)), 30, "beat holds its lock")

        def flower_queues() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{flower_port}/api/queues/length", timeout=5) as reply:
                return "ingest" in {queue["name"] for queue in json.load(reply)["active_queues"]}

        wait(flower_queues, 60, "Flower reads the queue lengths")

        health = subprocess.run([*AGGREGATOR, "health", "bridge", "worker", "beat"], env=stage.env,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0, health.stdout + health.stderr
        assert PASSWORD not in health.stdout + health.stderr

        probe = ("from worker.app import app; app.backend.store_result('p', 7, 'SUCCESS'); "
                 "print(app.AsyncResult('p').get())")
        backend = subprocess.run([sys.executable, "-c", probe], env=stage.env, capture_output=True, text=True,
                                 timeout=60)
        assert backend.stdout.strip() == "7", backend.stderr[-2000:]  # the result backend (chords' state)

        settings = Settings(redis_url=secured.url, redis_password=PASSWORD, redis_ca_cert=ca)
        up = {sample.labels["source"]: sample.value for family in StateCollector(settings).collect()
              if family.name == "aggregator_exporter_source_up" for sample in family.samples}
        assert up["redis"] == 1
        assert stage.dead() == [], [stage.log(name)[-2000:] for name in stage.dead()]
    finally:
        stage.close()
    assert PASSWORD not in "".join(stage.log(name) for name in ("bridge", "worker-ingest", "beat", "flower"))
