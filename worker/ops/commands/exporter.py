"""`aggregator exporter`: the product's state for Prometheus on EXPORTER_PORT until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import threading

from prometheus_client import CollectorRegistry, start_http_server

from worker.config.settings import Settings
from worker.ops.exporter import StateCollector


def run(args: argparse.Namespace, settings: Settings) -> int:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(settings))
    server, thread = start_http_server(args.port or settings.exporter_port, registry=registry)
    print(f"exporter on :{server.server_port}/metrics", flush=True)
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0
