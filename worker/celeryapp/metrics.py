"""A Celery worker's own metrics on WORKER_METRICS_PORT, summed over its prefork children.

The numbers that matter exist only inside the task, in a pool child, so each child writes
them to PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode) and the main
process sums them at scrape time. The directory is emptied at start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from celery.signals import worker_init, worker_process_shutdown
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from worker.config.settings import Settings, get_settings

log = logging.getLogger(__name__)


def prepare_directory(environ: Mapping[str, str]) -> None:
    """Create PROMETHEUS_MULTIPROC_DIR before the first metric is: prometheus-client reads the
    variable from the environment itself and opens its value files there as soon as a task
    module defines its metrics, at import, long before the worker starts."""
    directory = environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)


def serve(settings: Settings) -> int | None:
    """Start the worker's metrics endpoint (main process); its port, or None when off."""
    if not settings.worker_metrics_port or settings.prometheus_multiproc_dir is None:
        return None
    directory = Path(settings.prometheus_multiproc_dir)
    directory.mkdir(parents=True, exist_ok=True)
    # The values of a previous run of this worker (and of this main process's imports):
    # the pool processes are forked after this and write files of their own.
    for stale in directory.glob("*.db"):
        stale.unlink()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    server, _ = start_http_server(settings.worker_metrics_port, registry=registry)
    log.info("worker metrics served", extra={"port": server.server_port, "directory": str(directory)})
    return int(server.server_port)


@worker_init.connect
def _serve_on_start(**_: Any) -> None:
    serve(get_settings())


@worker_process_shutdown.connect
def _forget_child(pid: int | None = None, **_: Any) -> None:
    directory = get_settings().prometheus_multiproc_dir
    if directory is not None:
        multiprocess.mark_process_dead(pid or os.getpid(), str(directory))
