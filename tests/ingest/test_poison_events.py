"""Any bytes into a running bridge: every message ends as a point or a dead letter, and the
partition keeps moving (its offsets are committed past every message).

The decoder's property tests (tests/core/test_events.py) cover arbitrary bytes and mutated
events in-process; here the same kinds of messages go through Kafka, the real bridge, Redis,
a worker and PostgreSQL, and the bridge must not stop — before, one bad byte in a string
crashed it after every restart (a poison pill).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fault_harness import Stage, wait
from worker.ingest.deadletter import DeadLetterReader
from worker.ops.demo import demo_events

pytestmark = pytest.mark.faults


@pytest.fixture
def stage(env: dict[str, str], tmp_path: Path) -> Iterator[Stage]:
    stage = Stage(env, tmp_path)
    yield stage
    stage.close()


def mutations(valid: list[bytes], rng: random.Random) -> list[bytes]:
    """Invalid UTF-8 inside strings, lone surrogates, deep nesting, huge values, arbitrary
    bytes, truncation: each kind seen to crash or confuse a decoder somewhere. Each makes
    the event invalid (checked below), so each must end as a dead letter."""
    out = []
    for i, raw in enumerate(valid):
        kind = i % 7
        if kind == 0:
            out.append(raw.replace(b'"doi":"', b'"doi":"\xff\xfe', 1))
        elif kind == 1:
            out.append(raw.replace(b'"id":"', b'"id":"\\ud800', 1))
        elif kind == 2:
            out.append(raw[:-1] + b', "extra": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")
        elif kind == 3:
            out.append(raw.replace(b'"followers":', b'"followers":1' + b"0" * 40 + b",\"x\":", 1))
        elif kind == 4:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400))))
        elif kind == 5:
            out.append(raw[: rng.randint(0, len(raw) - 1)])
        else:
            out.append(raw.replace(b'"timestamp":"', b'"timestamp":"\xed\xa0\x80', 1))
    assert all(mutated != raw for mutated, raw in zip(out, valid, strict=True))
    return out


def test_a_running_bridge_takes_any_bytes(stage: Stage) -> None:
    rng = random.Random(77)
    good = list(demo_events(700, 30, seed=71))
    bad = mutations(list(demo_events(350, 30, seed=72)), rng)
    messages = good + bad
    rng.shuffle(messages)
    good_ids = [json.loads(raw)["id"] for raw in good]
    stage.start_worker()
    stage.start_bridge()
    stage.produce(messages, ids=good_ids)  # the ledger counts the valid ones; the rest are dead letters
    wait(lambda: stage.committed() == len(messages), 120, "the partitions moved past every message")
    reader = DeadLetterReader(stage.env["KAFKA_BOOTSTRAP_SERVERS"], stage.env["KAFKA_DLQ_TOPIC"],
                              stage.env["KAFKA_GROUP_ID"])
    try:
        letters = [letter for _, _, letter in reader.records({})]
    finally:
        reader.close()
    ledger = stage.ledger("poison messages into a running bridge", 0.0, dead_lettered=len(letters))
    assert (ledger.lost, ledger.conflicts, ledger.stored) == (0, 0, len(good))
    assert len(letters) == len(bad), "every mutated message is a dead letter"
    assert all(letter is not None and letter.reason for letter in letters)
    bridge = stage.supervisor.children["bridge"]
    assert bridge.restarts == 0, f"the bridge died: {bridge.exits}"
