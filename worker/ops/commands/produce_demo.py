"""`aggregator produce-demo`: realistic synthetic events to Kafka (:mod:`worker.ops.demo`)."""

from __future__ import annotations

import argparse
from datetime import timedelta

from worker.config.settings import Settings
from worker.ingest.deadletter import ensure_topic
from worker.ops.demo import demo_events, produce


def run(args: argparse.Namespace, settings: Settings) -> int:
    topic = args.topic or settings.kafka_topic
    # answers within CONNECT_TIMEOUT_S, or says why not
    ensure_topic(settings.kafka_connection(), topic, 1, timeout_s=settings.connect_timeout_s)
    payloads = demo_events(args.events, args.dois, seed=args.seed, spread=timedelta(hours=args.hours))
    n = produce(settings.kafka_connection(), topic, payloads, timeout_s=settings.connect_timeout_s)
    print(f"produced {n} events on {args.dois} DOIs to {topic}")
    return 0
