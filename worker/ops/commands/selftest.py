"""`aggregator selftest`: the event store checked end to end (:mod:`worker.ops.selftest`)."""

from __future__ import annotations

import argparse

from worker.config.settings import Settings
from worker.ops.selftest.run import report


def run(args: argparse.Namespace, settings: Settings) -> int:
    return report(settings)
