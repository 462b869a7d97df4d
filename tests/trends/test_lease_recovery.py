"""A worker node that starts gives up the leases its dead incarnation held (real Redis and
PostgreSQL), and only those."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

from worker.core.durations import DEFAULT_DURATIONS
from worker.trends.lease import Leases
from worker.trends.lifecycle import recover_leases
from worker.trends.planning import new_token, token_holder
from worker.trends.state import PostgresRunState

pytestmark = pytest.mark.integration

BY_NAME = {d.name: d for d in DEFAULT_DURATIONS}
AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_a_token_names_its_holder() -> None:
    assert token_holder(new_token("trends@host-a.example")) == "trends@host-a.example"
    assert token_holder(new_token()) is None
    assert new_token("n") != new_token("n")


def test_only_the_starting_nodes_leases_are_given_up(pg_dsn: str, redis_url: str) -> None:
    leases = Leases(redis.Redis.from_url(redis_url), 150)
    state = PostgresRunState(pg_dsn)
    try:
        state.start("dead-run", BY_NAME["currently"], AT)
        assert leases.of("currently").acquire(new_token("trends@a"))
        alive = new_token("trends@b")
        assert leases.of("today").acquire(alive)
        assert leases.of("year").acquire(new_token())  # an older product's token: no holder named
        recovered = recover_leases(leases, state, list(DEFAULT_DURATIONS), "trends@a")
        assert [d.name for d in recovered] == ["currently"]
        assert leases.of("currently").holder() is None
        assert leases.of("today").holder() == alive and leases.of("year").holder() is not None
        assert not state.is_running("dead-run")
        assert recover_leases(leases, state, list(DEFAULT_DURATIONS), "trends@a") == []
    finally:
        state.close()
        leases.close()
