"""`aggregator dev`: the whole product on local services, from a checkout: the local stack lives
with the tests (``tests/support/devstack/``), so the image carries nothing that starts a
broker or a database."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worker.config.settings import Settings
from worker.core.failures import UsageError

#: The checkout of an editable install (for an installed package: site-packages, without tests/).
CHECKOUT = Path(__file__).resolve().parents[3]


def run(args: argparse.Namespace, settings: Settings) -> int:
    if not (CHECKOUT / "tests" / "support" / "devstack" / "run.py").is_file():
        raise UsageError(f"aggregator dev runs from a checkout of the repository; {CHECKOUT} is an installed "
                         "package without the local stack (tests/support/devstack/)",
                         "Clone the repository, `pip install -e '.[dev]'` in it, and run `aggregator dev` there.")
    if str(CHECKOUT) not in sys.path:  # a console script's path holds the virtualenv, not the checkout
        sys.path.insert(0, str(CHECKOUT))
    from tests.support.devstack.run import run_dev

    # The dev stack sets its own environment for the processes it starts; this process's
    # settings are not theirs.
    return run_dev(events=args.events, dois=args.dois, workdir=args.workdir, keep=args.keep)
