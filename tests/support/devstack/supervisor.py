"""Restart the product's processes when they die, as compose's `restart: unless-stopped` does.

`aggregator dev` and the fault tests run the bridge, the workers and beat as child
processes. In production compose restarts a container whose process exited; here the
supervisor does the same, with a backoff (1 s, doubling to 30 s, reset after a minute of
uptime), so a local stack survives what a deployment survives — a worker that exits when
Redis restarts under it, a bridge killed by an operator — and the tests exercise recovery
the way it happens in production.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    restart_at: float | None = None  # when a dead child is due for its restart
    stopped: bool = False  # stopped on purpose: not restarted
    exits: list[int] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None


class Supervisor:
    """Children in their own process groups (a signal reaches a worker's pool too)."""

    BACKOFF_START_S = 1.0
    BACKOFF_MAX_S = 30.0
    STABLE_S = 60.0  # uptime after which the backoff starts again from the beginning

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.children: dict[str, Child] = {}
        self._clock = clock
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._halt = threading.Event()

    def start(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> Child:
        with self._lock:
            child = Child(name, argv, env, log_path)
            self.children[name] = child
            self._spawn(child)
            return child

    def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        output = open(child.log_path, "ab")  # noqa: SIM115 - owned by the child
        child.proc = subprocess.Popen(child.argv, env=child.env, stdout=output, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        output.close()
        child.started_at = self._clock()
        child.restart_at = None

    def _delay(self, child: Child) -> float:
        return min(self.BACKOFF_MAX_S, self.BACKOFF_START_S * (1 << min(child.restarts, 10)))

    def poll(self) -> list[str]:
        """Restart children that died (after their backoff); returns the names restarted."""
        restarted = []
        with self._lock:
            now = self._clock()
            for child in self.children.values():
                if child.stopped or child.alive or child.proc is None:
                    continue
                if child.restart_at is None:
                    code = child.proc.returncode
                    child.exits.append(code)
                    if now - child.started_at >= self.STABLE_S:
                        child.restarts = 0
                    child.restart_at = now + self._delay(child)
                    log.warning("process exited; restarting", extra={
                        "child": child.name, "code": code, "in_s": round(child.restart_at - now, 1)})
                    with contextlib.suppress(OSError), open(child.log_path, "a") as out:
                        out.write(f"\n[supervisor] {child.name} exited with {code}; restart in "
                                  f"{child.restart_at - now:.1f} s\n")
                elif now >= child.restart_at:
                    child.restarts += 1
                    self._spawn(child)
                    restarted.append(child.name)
        return restarted

    def run_in_background(self, interval_s: float = 0.2) -> None:
        """Poll from a daemon thread (the fault tests); `aggregator dev` polls in its loop."""
        def loop() -> None:
            while not self._halt.wait(interval_s):
                self.poll()

        self._thread = threading.Thread(target=loop, name="supervisor", daemon=True)
        self._thread.start()

    def signal(self, name: str, signum: int = signal.SIGKILL) -> None:
        """Send a signal to a child's whole process group (a fault test's kill -9)."""
        with self._lock:
            child = self.children[name]
            if child.alive and child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signum)

    def stop(self, name: str, timeout_s: float = 20.0) -> int | None:
        """Stop a child on purpose (SIGTERM, then SIGKILL after the timeout): not restarted."""
        with self._lock:
            child = self.children[name]
            child.stopped = True
        if child.proc is None or child.proc.poll() is not None:
            return child.proc.returncode if child.proc else None
        assert child.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            return child.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            return child.proc.wait()

    def resume(self, name: str) -> None:
        """Start a child stopped on purpose again."""
        with self._lock:
            child = self.children[name]
            child.stopped = False
            if not child.alive:
                self._spawn(child)

    def stop_all(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to every child (in reverse start order), then wait for all of them within
        one shared timeout; SIGKILL what is left."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(2)
        with self._lock:
            children = list(reversed(self.children.values()))
            for child in children:
                child.stopped = True
                if child.alive and child.pid is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGTERM)
        deadline = self._clock() + timeout_s
        for child in children:
            if child.proc is None:
                continue
            try:
                child.proc.wait(max(0.0, deadline - self._clock()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait()
