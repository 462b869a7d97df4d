"""Done / total of a long operation, as an operator reads it while it runs: redrawn in place
on a terminal, elsewhere a whole line at most every ``every_s`` (a log gets a heartbeat, not
a flood).
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    def __init__(self, what: str, total: int | None, write: Callable[[str], object], *, terminal: bool,
                 clock: Callable[[], float] = time.monotonic, every_s: float = 5.0, redraw_s: float = 0.2) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._write = write
        self._terminal = terminal
        self._clock = clock
        self._started = clock()
        self._last = self._started
        self._interval = redraw_s if terminal else every_s

    def line(self) -> str:
        elapsed = max(self._clock() - self._started, 1e-9)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.what}: {self.done} ({rate:.1f}/s)"
        left = max(self.total - self.done, 0)
        eta = f", ETA {_seconds(left / rate)}" if rate > 0 and left else ""
        return f"{self.what}: {self.done}/{self.total} ({100 * self.done // self.total}%), {rate:.1f}/s{eta}"

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._show()

    def finish(self) -> None:
        """The last line (always written), ending the terminal's redrawn line."""
        self._show()
        if self._terminal:
            self._write("\n")

    def _show(self) -> None:
        self._write(f"\r{self.line()}\x1b[K" if self._terminal else f"{self.line()}\n")


def _seconds(value: float) -> str:
    seconds = int(value + 0.5)
    return f"{seconds} s" if seconds < 120 else f"{seconds // 60} min {seconds % 60} s"
