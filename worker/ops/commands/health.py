"""`aggregator health [COMPONENT]`: the container healthcheck (see :mod:`worker.ops.health`)."""

from __future__ import annotations

import argparse

from worker.config.settings import Settings
from worker.ops.failures import EX_UNAVAILABLE
from worker.ops.health import check


def run(args: argparse.Namespace, settings: Settings) -> int:
    return EX_UNAVAILABLE if check(args.component, settings=settings) else 0
