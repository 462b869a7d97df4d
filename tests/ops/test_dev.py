"""`aggregator dev`: where it finds the local stack, and the stack's supervisor (real child
processes, a fake clock for the backoff)."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.devstack.supervisor import Supervisor
from worker.core.failures import UsageError
from worker.ops import cli
from worker.ops.commands import dev

pytestmark = pytest.mark.unit

EXITS = [sys.executable, "-c", "import sys; sys.exit(3)"]
# A child that runs until it is signalled (the `supervisor` fixture stops it even when a test fails).
RUNS = [sys.executable, "-c", "import signal; signal.pause()"]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def supervisor(clock: Clock) -> Iterator[Supervisor]:
    supervisor = Supervisor(clock=clock)
    yield supervisor
    supervisor.stop_all(timeout_s=5)


def wait_dead(supervisor: Supervisor, name: str) -> None:
    proc = supervisor.children[name].proc
    assert proc is not None
    proc.wait(10)


def test_a_child_that_exits_is_restarted_with_a_growing_backoff(tmp_path: Path, clock: Clock,
                                                                supervisor: Supervisor) -> None:
    child = supervisor.start("crashy", EXITS, {}, tmp_path / "crashy.log")
    delays = []
    for _ in range(4):
        wait_dead(supervisor, "crashy")
        assert supervisor.poll() == []  # noticed, restart scheduled
        assert child.restart_at is not None
        delays.append(child.restart_at - clock.now)
        clock.now = child.restart_at
        assert supervisor.poll() == ["crashy"]
    assert delays == [1.0, 2.0, 4.0, 8.0]
    assert child.exits == [3, 3, 3, 3]
    assert "[supervisor] crashy exited with 3" in (tmp_path / "crashy.log").read_text()


def test_the_backoff_starts_again_after_a_stable_minute(tmp_path: Path, clock: Clock, supervisor: Supervisor) -> None:
    child = supervisor.start("worker", RUNS, {}, tmp_path / "w.log")
    child.restarts = 5
    clock.now += 61
    supervisor.signal("worker", signal.SIGKILL)
    wait_dead(supervisor, "worker")
    supervisor.poll()
    assert child.restart_at == clock.now + 1.0


def test_a_child_stopped_on_purpose_stays_stopped(tmp_path: Path, clock: Clock, supervisor: Supervisor) -> None:
    supervisor.start("bridge", RUNS, {}, tmp_path / "b.log")
    started = time.monotonic()
    assert supervisor.stop("bridge", timeout_s=5) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    clock.now += 100
    assert supervisor.poll() == []
    supervisor.resume("bridge")
    assert supervisor.children["bridge"].alive
    supervisor.stop_all(timeout_s=5)
    assert not supervisor.children["bridge"].alive


def test_dev_from_an_installed_package_says_it_needs_a_checkout(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The image installs the package without tests/, so it carries no local stack."""
    monkeypatch.setattr(dev, "CHECKOUT", tmp_path)
    args = cli.make_parser().parse_args(["dev"])
    with pytest.raises(UsageError, match="runs from a checkout") as refused:
        dev.run(args, None)  # type: ignore[arg-type]
    assert "pip install -e '.[dev]'" in str(refused.value.hint)


def test_dev_finds_the_local_stack_in_the_checkout_it_runs_from() -> None:
    assert (dev.CHECKOUT / "tests" / "support" / "devstack" / "run.py").is_file()
