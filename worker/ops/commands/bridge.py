"""`aggregator bridge`: the Kafka -> Celery bridge until SIGTERM (:mod:`worker.ingest.bridge`)."""

from __future__ import annotations

import argparse

from worker.celeryapp.app import app
from worker.celeryapp.resources import build_bridge
from worker.config.settings import Settings
from worker.ingest.bridge.metrics import serve_metrics


def run(args: argparse.Namespace, settings: Settings) -> int:
    bridge = build_bridge(settings, app)
    bridge.install_signal_handlers()
    if settings.bridge_metrics_port:
        serve_metrics(bridge, settings.bridge_metrics_port)
    bridge.run()
    return 0
