"""Synthetic discussion events for the local stack, tests and benchmarks: Zipf-like popularity
over DOIs, timestamps spread over the recent past."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
from confluent_kafka import Producer

from worker.ingest.kafka_config import DEFAULT_TIMEOUT_S, Brokers, client_config

_encoder = msgspec.json.Encoder()


def demo_doi(i: int) -> str:
    return f"10.1101/2021.04.{i // 1000:02d}.{i:06d}"


def make_event(rng: random.Random, doi: str, at: datetime) -> dict[str, object]:
    followers = int(rng.lognormvariate(6, 1.6))
    length = rng.randint(20, 280)
    return {
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "obj": {"data": {"doi": doi, "title": f"Paper {doi}"}},
        "subj": {
            "pid": f"https://twitter.com/user{rng.randint(1, 10**6)}/status/{rng.randint(10**17, 10**18)}",
            "processed": {
                "score": round(rng.uniform(1, 80), 3),
                "sentiment_raw": round(rng.uniform(-1, 1), 3),
                "followers": followers,
                "length": length,
                "question_mark_count": rng.choice((0, 0, 0, 1, 2)),
                "exclamation_mark_count": rng.choice((0, 0, 1)),
                "bot_rating": rng.choice((1, 2, 5, 10)),
                "contains_abstract_raw": round(rng.random(), 3),
                "time_score": round(rng.uniform(0, 30), 3),
                "type_factor": rng.choice((0.5, 1.0)),
                "user_score": round(rng.uniform(0, 30), 3),
                "content_score": round(rng.uniform(0, 20), 3),
            },
        },
        "id": str(uuid.UUID(int=rng.getrandbits(128))),
    }


def demo_events(n: int, dois: int, *, seed: int = 7, now: datetime | None = None,
                spread: timedelta = timedelta(hours=6)) -> Iterator[bytes]:
    """``n`` encoded events over ``dois`` DOIs, timestamps within ``spread`` before ``now``."""
    rng = random.Random(seed)
    now = now or datetime.now(UTC)
    weights = [1.0 / (rank + 1) ** 0.8 for rank in range(dois)]
    chosen = rng.choices(range(dois), weights=weights, k=n)
    for index in chosen:
        at = now - timedelta(seconds=rng.uniform(0, spread.total_seconds()))
        yield _encoder.encode(make_event(rng, demo_doi(index), at))


def produce(bootstrap: Brokers, topic: str, payloads: Iterator[bytes], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    """Produce and wait for every delivery; return how many were delivered."""
    producer = Producer(client_config(bootstrap, {"linger.ms": 20, "acks": "all"}, timeout_s=timeout_s))
    errors: list[str] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    count = 0
    for count, payload in enumerate(payloads, 1):
        while True:
            try:
                producer.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.5)  # local queue full: wait for deliveries
        if count % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("some demo events were not delivered within 60 s")
    if errors:
        raise RuntimeError(f"{len(errors)} demo events failed: {errors[:3]}")
    return count
