"""Progress lines: a heartbeat in a log, a redrawn line on a terminal (fake clock)."""

from __future__ import annotations

import pytest

from worker.core.progress import Progress

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_gets_a_line_every_interval_and_at_the_end() -> None:
    clock, out = Clock(), list[str]()
    progress = Progress("chunks", 100, out.append, terminal=False, clock=clock, every_s=5)
    for _ in range(10):
        clock.now += 1
        progress.advance(5)
    progress.finish()
    assert out == ["chunks: 25/100 (25%), 5.0/s, ETA 15 s\n", "chunks: 50/100 (50%), 5.0/s, ETA 10 s\n",
                   "chunks: 50/100 (50%), 5.0/s, ETA 10 s\n"]


def test_a_terminal_line_is_redrawn_and_ended() -> None:
    clock, out = Clock(), list[str]()
    progress = Progress("letters", 4, out.append, terminal=True, clock=clock)
    for _ in range(4):
        clock.now += 0.5
        progress.advance()
    progress.finish()
    assert all(line.startswith("\r") and line.endswith("\x1b[K") for line in out[:-1])
    assert out[-2] == "\rletters: 4/4 (100%), 2.0/s\x1b[K" and out[-1] == "\n"


def test_without_a_total_it_counts() -> None:
    clock, out = Clock(), list[str]()
    progress = Progress("events", None, out.append, terminal=False, clock=clock)
    clock.now += 2
    progress.advance(10)
    progress.finish()
    assert out == ["events: 10 (5.0/s)\n"]
