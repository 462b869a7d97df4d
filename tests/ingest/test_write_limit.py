"""The shared write limit: the Lua script on a real Redis answers exactly as the pure
arithmetic (worker/core/token_bucket.py) on the same inputs, and holds the same bound."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.devstack.services import RedisServer
from tests.support.helpers import admitted_bound
from worker.core.token_bucket import Bucket, take
from worker.ingest.write_limit import WriteLimit

pytestmark = pytest.mark.integration

RATES = st.sampled_from([0.5, 1.0, 3.0, 10.0, 20.0, 1000.0 / 60, 0.1, 2000.0])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(RATES, st.integers(min_value=1, max_value=50),
       st.lists(st.integers(min_value=-200_000, max_value=3_000_000), min_size=1, max_size=60))
def test_the_script_and_the_arithmetic_agree_take_by_take(redis_url: str, rate: float, capacity: int,
                                                          gaps: list[int]) -> None:
    limit = WriteLimit(redis.Redis.from_url(redis_url), f"test:bucket:{uuid.uuid4().hex}", rate, capacity)
    state: Bucket | None = None
    now = 1_700_000_000_000_000  # µs; a gap below 0 is a worker whose clock is behind
    granted = []
    try:
        for gap in gaps:
            now += gap
            expected = take(state, now, rate, capacity)
            wait_s = limit.take(now_us=now)
            assert wait_s == expected.wait_us / 1e6, (now, state)
            stored = limit._client.hgetall(limit.key)
            assert (int(stored[b"t"]), int(stored[b"at"])) == (expected.state.micro_tokens, expected.state.at_us)
            state = expected.state
            if expected.granted:  # on the bucket's timeline (a late clock's take counts at the bucket's time)
                granted.append(expected.state.at_us)
    finally:
        limit.close()
    for i in range(len(granted)):
        for j in range(i, len(granted)):
            assert j - i + 1 <= admitted_bound(capacity, rate, (granted[j] - granted[i]) / 1e6) + 1e-9


def test_an_idle_bucket_expires_full_and_redis_time_counts(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    limit = WriteLimit(client, "test:bucket:clock", 1.0, 3)
    assert [limit.take() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst, on Redis's clock
    assert 0.9 < limit.take() <= 1.0
    assert 60_000 - 100 <= client.pttl("test:bucket:clock") <= 60_000  # forgotten once it would be full


def test_waits_within_its_bound_then_hands_back_the_wait(redis_url: str) -> None:
    """On a fake clock: the limiter's sleep moves it, and the script takes it as Redis's time."""
    limit = WriteLimit(redis.Redis.from_url(redis_url), f"test:bucket:wait:{uuid.uuid4().hex}", 2.0, 1)
    clock = [1_700_000_000_000_000]
    slept: list[float] = []

    def nap(seconds: float) -> None:  # the time a token takes to come, passed at once
        slept.append(seconds)
        clock[0] += round(seconds * 1e6)

    def now() -> int:
        return clock[0]

    assert limit.acquire(5.0, sleep=nap, now_us=now) == 0.0 and slept == []
    assert limit.acquire(5.0, sleep=nap, now_us=now) == 0.0 and slept == [0.5]  # one token at 2/s
    assert limit.acquire(0.1, sleep=nap, now_us=now) == 0.5 and slept == [0.5]  # too long: the task retries


def test_without_redis_each_process_limits_itself_at_the_rate(redis_url: str) -> None:
    """Redis gone (it is also the broker): writes go on, at the rate per process, not unlimited."""
    clock = iter(range(0, 10**9, 100_000))  # 0.1 s per take
    limit = WriteLimit(redis.Redis(port=1, socket_connect_timeout=0.2), "test:bucket:gone", 2.0, 2,
                       clock_us=lambda: next(clock))
    answers = [limit.take() for _ in range(6)]
    assert answers[:2] == [0.0, 0.0] and answers[2] > 0  # the burst, then the rate
    assert sum(1 for wait in answers if wait == 0.0) <= admitted_bound(2, 2.0, 0.5)


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
