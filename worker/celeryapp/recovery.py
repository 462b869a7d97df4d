"""A restarted trends worker takes its dead incarnation's runs back at once (worker_ready):
it releases the leases its node name holds, fails their runs and sends them again
(:func:`worker.trends.lifecycle.recover_leases`), instead of waiting for the lease to expire.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready

from worker.celeryapp.resources import for_process
from worker.core import names
from worker.trends.lifecycle import recover_leases

log = logging.getLogger(__name__)


def recover(node: str, send_task: Any) -> list[str]:
    """Release ``node``'s stale leases and send their durations' runs; the names sent."""
    resources = for_process()
    settings = resources.settings
    durations = recover_leases(resources.leases, resources.run_state, list(settings.durations().values()), node)
    for duration in durations:
        send_task(names.RUN_TREND, args=(duration.name,), queue=settings.trends_queue)
    return [duration.name for duration in durations]


@worker_ready.connect
def _recover_on_start(sender: Any = None, **_: Any) -> None:
    node = getattr(sender, "hostname", None)
    if not node:
        return
    try:
        recover(node, sender.app.send_task)
    except Exception as error:  # recovery is an optimisation: the lease still expires by itself
        log.warning("lease recovery at start failed; the leases expire by themselves",
                    extra={"node": node, "error": str(error)[:300]})
