"""The shared write limit: the Lua script on a real Redis answers exactly as the pure
arithmetic (worker/core/token_bucket.py) on the same inputs, and holds the same bound."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.devstack.services import RedisServer
from tests.support.helpers import admitted_bound
from worker.celeryapp.resources import redis_client
from worker.config.settings import Settings
from worker.core.token_bucket import Bucket, capacity_units, take
from worker.ingest.write_limit import WriteLimit

pytestmark = pytest.mark.integration

RATES = st.sampled_from([0.5, 1.0, 3.0, 10.0, 20.0, 1000.0 / 60, 0.1, 2000.0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(RATES, st.integers(min_value=1, max_value=50),
       st.lists(st.tuples(st.floats(0, 1), st.integers(min_value=-200_000, max_value=3_000_000)),
                min_size=1, max_size=30))
def test_the_script_and_the_arithmetic_agree_take_by_take(redis_url: str, rate: float, capacity: int,
                                                          steps: list[tuple[float, int]]) -> None:
    """Each take finds a bucket set to ``fill`` of its capacity as of ``gap`` µs before Redis's
    time (a gap below 0: a bucket last taken "in the future"); the stored result and the wait
    are the arithmetic's at the time the script read (the state's new ``at``, or an earlier
    time when the clock went back: then elapsed is 0 either way)."""
    client = redis.Redis.from_url(redis_url)
    limit = WriteLimit(client, f"test:bucket:{uuid.uuid4().hex}", rate, capacity)
    try:
        for fill, gap in steps:
            seconds, micros = client.time()
            before = Bucket(round(fill * capacity_units(capacity)), seconds * 1_000_000 + micros - gap)
            client.hset(limit.key, mapping={"t": before.micro_tokens, "at": before.at_us})
            wait_s = limit.take()
            stored = client.hgetall(limit.key)
            after = Bucket(int(stored[b"t"]), int(stored[b"at"]))
            expected = take(before, after.at_us, rate, capacity)
            assert (wait_s, after) == (expected.wait_us / 1e6, expected.state), (before, after)
    finally:
        limit.close()


def test_an_idle_bucket_expires_full_and_redis_time_counts(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limit = WriteLimit(client, "test:bucket:clock", 1.0, 3)
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst, on Redis's clock
    assert 0.9 < limit.take() <= 1.0
    assert 60_000 - 100 <= client.pttl("test:bucket:clock") <= 60_000  # forgotten once it would be full


def test_waits_within_its_bound_then_hands_back_the_wait(redis_url: str) -> None:
    limit = WriteLimit(redis.Redis.from_url(redis_url), f"test:bucket:wait:{uuid.uuid4().hex}", 10.0, 1)
    assert limit.acquire(5.0) == 0.0
    started = time.monotonic()
    assert limit.acquire(5.0) == 0.0  # one token at 10/s: waited for it
    assert 0.05 < time.monotonic() - started < 1.0
    assert 0.05 < limit.acquire(0.01) <= 0.1  # too long: the task retries with that countdown


def test_without_redis_each_process_limits_itself_at_the_rate() -> None:
    """Redis gone (it is also the broker): writes go on, at the rate per process, not unlimited.
    The client is the product's: each take tries Redis once, without the retries and seconds
    of backoff a ``redis.Redis(...)`` built by hand gets, so the local bucket applies at once."""
    with socket.create_server(("127.0.0.1", 0)) as server:  # accepts, then hangs up: a dying Redis
        attempts: list[int] = []

        def hang_up() -> None:
            with contextlib.suppress(OSError):
                while True:
                    connection = server.accept()[0]
                    attempts.append(1)  # before the hang-up the client waits for: counted when it returns
                    connection.close()

        threading.Thread(target=hang_up, daemon=True).start()
        settings = Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{server.getsockname()[1]}/0")
        limit = WriteLimit(redis_client(settings, 0.5), "test:bucket:gone", 2.0, 2)
        started = time.monotonic()
        answers = [limit.take() for _ in range(6)]
        assert answers[:2] == [0.0, 0.0] and answers[2] > 0  # the burst, then the rate
        assert sum(1 for wait in answers if wait == 0.0) <= admitted_bound(2, 2.0, time.monotonic() - started)
        assert len(attempts) == 6


def test_an_outage_is_logged_once_and_its_end_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """During an outage every task takes a token: one warning for all of them, not one each,
    and one line when Redis answers again. A Redis of the test's own, stopped and started."""
    server = RedisServer(tmp_path).start()
    limit = WriteLimit(redis.Redis.from_url(server.url, socket_connect_timeout=0.5), "test:bucket:outage", 1000.0, 1000)
    caplog.set_level(logging.INFO, logger="worker.ingest.write_limit")
    try:
        assert limit.take() == 0.0
        server.stop()
        assert [limit.take() for _ in range(5)] == [0.0] * 5  # the local bucket's burst
        server.start()  # the same port
        assert [limit.take() for _ in range(3)] == [0.0] * 3
    finally:
        limit.close()
        server.stop()
    said = [r.getMessage() for r in caplog.records if r.name == "worker.ingest.write_limit"]
    assert said == ["write limit: Redis did not answer; this process limits itself to the rate alone",
                    "write limit: Redis answers again; the shared bucket applies"]
