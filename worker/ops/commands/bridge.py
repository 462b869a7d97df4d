"""`aggregator bridge`: the Kafka -> Celery bridge until SIGTERM (:mod:`worker.ingest.bridge`);
`aggregator bridge resume` lifts a dead-letter-guard stop (:mod:`worker.ingest.bridge.guard_state`)."""

from __future__ import annotations

import argparse

from worker.celeryapp.app import app
from worker.celeryapp.resources import build_bridge, redis_client
from worker.config.settings import Settings
from worker.ingest.bridge.guard_state import RedisGuardRecords
from worker.ingest.bridge.metrics import serve_metrics


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.bridge_command == "resume":
        return resume(settings)
    bridge = build_bridge(settings, app)
    bridge.install_signal_handlers()
    if settings.bridge_metrics_port:
        serve_metrics(bridge, settings.bridge_metrics_port)
    bridge.run()
    return 0


def resume(settings: Settings) -> int:
    """Remove the group's stop record: every bridge of the group resumes within about a
    second, with an empty guard window (a stream still invalid trips it again)."""
    with redis_client(settings) as client:
        # a Redis error is reported as one (worker.ops.failures.classify)
        lifted = RedisGuardRecords(client, settings.kafka_group_id, settings.kafka_topic).clear()
    where = f"group {settings.kafka_group_id}, topic {settings.kafka_topic}"
    if lifted is None:
        print(f"no dead-letter guard stop in force ({where})")
    else:
        print(f"lifted the dead-letter guard stop ({where}): {lifted.reason} (since {lifted.at}, by {lifted.by}); "
              "the bridges resume within a second")
    return 0
