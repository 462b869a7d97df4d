"""The ingest task wired through Celery (eager) against a real PostgreSQL and Kafka."""

from __future__ import annotations

import pytest
from helpers import count_events

from worker.deadletter import DeadLetterReader
from worker.demo import demo_events
from worker.events import decode_event, points_to_wire

pytestmark = pytest.mark.integration


def test_batch_is_written_once_even_when_sent_twice(eager, env: dict[str, str]) -> None:
    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(300, 20)]
    result = write_batch.delay(points_to_wire(points))
    assert result.get() == {"written": 300, "dead_lettered": 0}
    write_batch.delay(points_to_wire(points)).get()
    assert count_events(env["POSTGRES_DSN"]) == 300


def test_malformed_batch_goes_to_dead_letters(eager, env: dict[str, str]) -> None:
    from tasks.ingest import write_batch

    assert write_batch.delay([["not", "a", "point"]]).get() == {"written": 0, "dead_lettered": 1}
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    letters = [letter for _, letter in reader.read()]
    reader.close()
    assert len(letters) == 1 and letters[0].kind == "batch" and "malformed batch" in letters[0].reason


@pytest.fixture
def store_down(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from worker import runtime
    from worker.settings import get_settings

    monkeypatch.setenv("POSTGRES_DSN", "postgresql://nobody:x@127.0.0.1:1/none")
    monkeypatch.setenv("INGEST_MAX_RETRIES", "2")
    get_settings.cache_clear()
    runtime.reset()


def test_unreachable_store_asks_for_a_retry_with_backoff(eager, store_down: None) -> None:
    """Eager mode does not run retries (it raises Retry); the real-worker run is in tests/e2e."""
    from celery.exceptions import Retry

    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(5, 2)]
    with pytest.raises(Retry) as caught:
        write_batch.apply(args=[points_to_wire(points)], retries=1, throw=True)
    assert 0 <= caught.value.when <= 0.4  # full jitter under backoff 0.2 s x 2**1


def test_unreachable_store_past_the_budget_dead_letters(eager, store_down: None,
                                                        env: dict[str, str]) -> None:
    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(5, 2)]
    result = write_batch.apply(args=[points_to_wire(points)], retries=2, throw=True)
    assert result.get() == {"written": 0, "dead_lettered": 5}
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    letters = [letter for _, letter in reader.read()]
    reader.close()
    assert letters[0].kind == "batch" and letters[0].attempt == 3
    assert "store unavailable after 2 retries" in letters[0].reason
    assert len(letters[0].points or []) == 5
