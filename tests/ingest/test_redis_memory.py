"""Reading how full Redis is and recognising its refusal at maxmemory, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from worker.ingest.redis_memory import MemoryUse, refused_for_memory

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.config_set("maxmemory", 0)


def test_the_ratio_is_used_over_maxmemory_and_zero_without_a_limit(client: redis.Redis) -> None:
    assert MemoryUse.read(client).limit == 0 and MemoryUse.read(client).ratio == 0.0
    used = MemoryUse.read(client).used
    client.config_set("maxmemory", used * 4)
    assert 0.2 < MemoryUse.read(client).ratio < 0.3


def test_every_shape_of_the_refusal_is_recognised_and_nothing_else(client: redis.Redis) -> None:
    client.config_set("maxmemory", 1)
    errors = []
    with pytest.raises(redis.ResponseError) as caught:
        client.lpush("q", b"x")  # a plain write
    errors.append(caught.value)
    for command in ("lpush", "llen"):  # inside MULTI: a write, and even a read, is refused
        pipe = client.pipeline()
        pipe.execute_command(command.upper(), "q", *([b"x"] if command == "lpush" else []))
        with pytest.raises(redis.ResponseError) as caught:
            pipe.execute()
        errors.append(caught.value)
    assert all(refused_for_memory(error) for error in errors)
    try:
        raise RuntimeError("wrapped, as kombu and Celery do") from errors[0]
    except RuntimeError as wrapped:
        assert refused_for_memory(wrapped)
    assert client.lpop("q") is None  # a pop still works
    assert not refused_for_memory(redis.ConnectionError("refused")) and not refused_for_memory(None)
