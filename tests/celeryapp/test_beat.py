"""Beat's configuration from the settings (pure): the locked scheduler and the takeover bound."""

from __future__ import annotations

from typing import Any

import pytest

from worker.celeryapp.beat import (
    BEAT_KEY_PREFIX,
    BEAT_LOCK_KEY,
    beat_max_interval_s,
    build_beat_schedule,
    scheduler_config,
)
from worker.config.settings import Settings

pytestmark = pytest.mark.unit


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_the_scheduler_is_redbeat_with_the_products_lock() -> None:
    s = settings(redis_url="redis://redis:6379/0", beat_lock_timeout_s=60)
    conf = scheduler_config(s)
    assert conf["beat_scheduler"] == "worker.celeryapp.beat_scheduler.Scheduler"
    assert conf["redbeat_redis_url"] == "redis://redis:6379/0"
    assert conf["redbeat_lock_key"] == BEAT_LOCK_KEY and BEAT_LOCK_KEY.startswith(BEAT_KEY_PREFIX)
    assert conf["redbeat_lock_timeout"] == 60
    # Beat extends its lock at least five times per timeout; a standby polls as often.
    assert conf["beat_max_loop_interval"] == beat_max_interval_s(s) == 12
    # The client's own options are set: redbeat never falls back to the broker's transport options.
    assert set(conf["redbeat_redis_options"]) == {"socket_timeout", "socket_connect_timeout", "retry_period"}
    assert conf["redbeat_redis_options"]["retry_period"] < conf["redbeat_lock_timeout"]


@pytest.mark.parametrize("timeout", [5, 30, 90])
def test_the_takeover_ends_within_beats_cron_starting_deadline(timeout: int) -> None:
    """A tick missed while the standby takes over is fired late, not skipped (celeryconfig's
    beat_cron_starting_deadline, 120 s)."""
    import celeryconfig

    conf = scheduler_config(settings(beat_lock_timeout_s=timeout))
    # A standby takes the lock once it has expired, at its next poll.
    takeover_s = conf["redbeat_lock_timeout"] + conf["beat_max_loop_interval"]
    assert takeover_s < celeryconfig.beat_cron_starting_deadline


@pytest.mark.parametrize("timeout", [4, 91])
def test_lock_timeouts_outside_the_bounds_are_refused(timeout: int) -> None:
    with pytest.raises(ValueError, match="beat_lock_timeout_s"):
        settings(beat_lock_timeout_s=timeout)


def test_the_schedule_is_unchanged_by_the_scheduler() -> None:
    schedule = build_beat_schedule(settings())
    assert {"trends-currently", "trends-today", "trends-week", "trends-month", "trends-year", "maintenance",
            "morning-post"} == set(schedule)
