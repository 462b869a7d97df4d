"""`aggregator dev`: the whole product on local services (:mod:`worker.ops.devstack.run`)."""

from __future__ import annotations

import argparse

from worker.config.settings import Settings
from worker.ops.devstack.run import run_dev


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The dev stack sets its own environment for the processes it starts; this process's
    # settings are not theirs.
    return run_dev(events=args.events, dois=args.dois, workdir=args.workdir, keep=args.keep)
