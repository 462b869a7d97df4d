"""`aggregator selftest`: the event store checked end to end, safe on a live deployment.

One line per check (``ok`` / ``FAIL`` with the difference), then a summary; exit 0 when
every check passed, 1 when one failed (:mod:`worker.ops.selftest`). ``aggregator setup``
runs the same at its end.
"""

from __future__ import annotations

import argparse

from worker.config.settings import Settings
from worker.ops.selftest.run import report


def _print(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace, settings: Settings) -> int:
    return report(settings, emit=_print)
