"""Exactly one beat fires: two real `celery beat` processes on one Redis, the second a standby.

Both run the product's beat configuration (celery-redbeat, BEAT_LOCK_TIMEOUT_S) on a test
schedule of one entry every second (tests/support/beat_probe.py). Every fire is a message in
Redis that names the process that sent it, read here as it arrives: while both beats live,
every tick fires once, from the lock holder; once the holder is SIGKILLed, the standby fires
within the lock timeout plus one poll and one tick, and still every tick once. A beat on a
full Redis stays alive and fires again a tick after Redis has room.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest
import redis

from tests.support.helpers import log_text, wait_for
from tests.support.redis_tap import RedisListTap
from worker.celeryapp.beat import BEAT_LOCK_KEY

pytestmark = pytest.mark.faults

LOCK_TIMEOUT_S = 5
MAX_INTERVAL_S = LOCK_TIMEOUT_S / 5
TICK_S = 1.0
BEAT = [sys.executable, "-m", "celery", "-A", "tests.support.beat_probe", "beat", "-l", "info"]


@dataclass(frozen=True)
class Fire:
    at: float  # monotonic, when the message reached Redis (read at once by a blocking pop)
    pid: int  # the beat process that sent it
    task: str


class Fires:
    """Every message beat sends to the probe queue, popped as it arrives."""

    def __init__(self, url: str, queue: str) -> None:
        self.seen: list[Fire] = []
        self._tap = RedisListTap(url, queue, self._add, right=True)

    def _add(self, raw: bytes, at: float) -> None:
        message = json.loads(raw)
        headers = message["headers"]
        origin = str(headers["origin"])  # gen<pid>@<host>
        json.loads(base64.b64decode(message["body"]))  # a whole task message
        self.seen.append(Fire(at, int(origin.split("@")[0].removeprefix("gen")), headers["task"]))

    def since(self, t: float) -> list[Fire]:
        return [fire for fire in list(self.seen) if fire.at >= t]

    def close(self) -> None:
        self._tap.close()


@pytest.fixture
def fires(redis_url: str) -> Iterator[tuple[Fires, str]]:
    queue = f"beat-probe-{uuid.uuid4().hex[:6]}"
    reader = Fires(redis_url, queue)
    yield reader, queue
    reader.close()


def assert_each_tick_once(seen: list[Fire]) -> None:
    """Consecutive fires of a 1 s entry are about a second apart; two beats would fire each
    tick twice, a few milliseconds apart."""
    gaps = [b.at - a.at for a, b in pairwise(seen)]
    assert gaps and min(gaps) > TICK_S / 2, f"a tick fired twice: gaps {[round(g, 3) for g in gaps]}"


def test_two_beats_fire_each_tick_once_and_the_standby_takes_over_a_killed_one(
        env: dict[str, str], spawn, fires: tuple[Fires, str], redis_url: str) -> None:
    reader, queue = fires
    beat_env = {**env, "BEAT_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S), "PROBE_QUEUE": queue}
    first = spawn(BEAT, beat_env, "beat-a")
    wait_for(lambda: any(f.pid == first.pid for f in reader.seen) or first.poll() is not None, 60,
             "the first beat fires")
    assert first.poll() is None, log_text(first)[-3000:]
    second = spawn(BEAT, beat_env, "beat-b")
    wait_for(lambda: "beat: Starting" in log_text(second) or second.poll() is not None, 60,
             "the second beat started")
    assert second.poll() is None, log_text(second)[-3000:]

    # Both alive: six ticks, each fired once, all by the lock holder.
    both = time.monotonic()
    wait_for(lambda: len(reader.since(both)) >= 6, 30, "six ticks with both beats alive")
    seen = reader.since(both)
    assert {fire.pid for fire in seen} == {first.pid}, "the standby fired while the active beat lived"
    assert {fire.task for fire in seen} == {"tests.beat_probe"}
    assert_each_tick_once(seen)
    assert redis.Redis.from_url(redis_url).exists(BEAT_LOCK_KEY) == 1, "the active beat holds no lock"

    # The active beat dies without a word: its lock expires, the standby takes it and fires.
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = time.monotonic()
    bound = LOCK_TIMEOUT_S + MAX_INTERVAL_S + TICK_S
    wait_for(lambda: any(f.pid == second.pid for f in reader.since(killed)), bound + 10, "the standby fires")
    takeover = next(f.at for f in reader.since(killed) if f.pid == second.pid) - killed
    print(f"FAULT beat SIGKILL: standby fired {takeover:.1f} s after the kill (lock {LOCK_TIMEOUT_S} s, "
          f"bound {bound:.0f} s)")
    assert takeover <= bound + 1.0, f"takeover {takeover:.1f} s > {bound} s"

    after = time.monotonic()
    wait_for(lambda: len(reader.since(after)) >= 5, 30, "five ticks from the standby")
    assert {fire.pid for fire in reader.since(killed)} == {second.pid}
    assert_each_tick_once(reader.since(both))
    assert second.poll() is None, log_text(second)[-3000:]


def test_a_beat_stopped_with_sigterm_hands_over_at_once(env: dict[str, str], spawn,
                                                        fires: tuple[Fires, str]) -> None:
    """A graceful stop (a deploy) releases the lock: the standby fires within one poll."""
    reader, queue = fires
    beat_env = {**env, "BEAT_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S), "PROBE_QUEUE": queue}
    first = spawn(BEAT, beat_env, "beat-a")
    wait_for(lambda: any(f.pid == first.pid for f in reader.seen) or first.poll() is not None, 60,
             "the first beat fires")
    second = spawn(BEAT, beat_env, "beat-b")
    wait_for(lambda: "beat: Starting" in log_text(second), 60, "the second beat started")
    both = time.monotonic()
    wait_for(lambda: len(reader.since(both)) >= 3, 30, "three ticks with both beats alive")
    assert {fire.pid for fire in reader.since(both)} == {first.pid}, "the standby fired while the active beat lived"
    os.killpg(first.pid, signal.SIGTERM)
    first.wait(30)
    stopped = time.monotonic()
    wait_for(lambda: any(f.pid == second.pid for f in reader.since(stopped)), LOCK_TIMEOUT_S + 10,
             "the standby fires")
    handover = next(f.at for f in reader.since(stopped) if f.pid == second.pid) - stopped
    print(f"FAULT beat SIGTERM: standby fired {handover:.1f} s after the stop")
    assert handover <= MAX_INTERVAL_S + TICK_S + 1.0
    assert_each_tick_once(reader.since(both))


def _refused_for_memory(client: redis.Redis) -> int:
    """How many commands Redis has refused at its ``maxmemory`` (INFO errorstats)."""
    return int(client.info("errorstats").get("errorstat_OOM", {}).get("count", 0))


def test_a_full_redis_pauses_beat_which_fires_again_once_redis_has_room(
        env: dict[str, str], spawn, fires: tuple[Fires, str], redis_url: str) -> None:
    """Over its ``maxmemory`` (noeviction) Redis refuses even beat's read of its schedule (a
    MULTI): beat fires nothing then, stays alive, and fires again a tick after Redis has room."""
    reader, queue = fires
    client = redis.Redis.from_url(redis_url)
    beat = spawn(BEAT, {**env, "BEAT_LOCK_TIMEOUT_S": str(LOCK_TIMEOUT_S), "PROBE_QUEUE": queue}, "beat")
    wait_for(lambda: bool(reader.seen) or beat.poll() is not None, 60, "beat fires")
    filler = f"filler-{uuid.uuid4().hex[:6]}"
    try:
        # 2 MiB of filler, and maxmemory 1 MiB below what Redis then holds: full until the
        # filler goes, whatever the clients' buffers do meanwhile.
        client.rpush(filler, *[b"x" * 4096] * 512)
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 1024 * 1024)
        with pytest.raises(redis.exceptions.OutOfMemoryError):
            client.rpush(filler, b"x")
        wait_for(lambda: "beat: Redis is full" in log_text(beat) or beat.poll() is not None, 30,
                 "beat meets the full Redis")
        refused = _refused_for_memory(client)
        wait_for(lambda: _refused_for_memory(client) >= refused + 3 or beat.poll() is not None, 30,
                 "three more ticks refused")
        assert beat.poll() is None, log_text(beat)[-3000:]
    finally:
        client.delete(filler)
        client.config_set("maxmemory", 0)
    room = time.monotonic()
    wait_for(lambda: bool(reader.since(room)) or beat.poll() is not None, 30, "beat fires again")
    resumed = reader.since(room)[0].at - room
    print(f"FAULT beat on a full Redis: alive, fired again {resumed:.1f} s after Redis had room")
    assert resumed <= MAX_INTERVAL_S + TICK_S + 1.0
    assert "beat: Redis answers again" in log_text(beat)
    assert beat.poll() is None
