"""The ingest task wired through Celery (eager) against a real PostgreSQL and Kafka."""

from __future__ import annotations

import pytest

from tests.support.helpers import count_events
from worker.core.events import decode_event, points_to_wire
from worker.db.connection import Database
from worker.ingest.deadletter import DeadLetterReader
from worker.ops.demo import demo_events

pytestmark = pytest.mark.integration


def test_batch_is_written_once_even_when_sent_twice(eager, env: dict[str, str]) -> None:
    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(300, 20)]
    result = write_batch.delay(points_to_wire(points))
    assert result.get() == {"written": 300, "dead_lettered": 0, "conflicts": 0}
    write_batch.delay(points_to_wire(points)).get()
    assert count_events(env["POSTGRES_DSN"]) == 300


def test_malformed_batch_goes_to_dead_letters(eager, env: dict[str, str]) -> None:
    """Whatever form a bad batch comes in, its dead letter is readable and says what came;
    a replay keeps it dead-lettered (attempt + 1) instead of stopping on it."""
    from tasks.ingest import write_batch
    from worker.app import app
    from worker.ingest.deadletter import DeadLetterWriter
    from worker.ingest.publisher import IngestPublisher
    from worker.ingest.replay import replay
    from worker.ingest.triage_log import TriageLog

    assert write_batch.delay([["not", "a", "point"]]).get() == {"written": 0, "dead_lettered": 1, "conflicts": 0}
    assert write_batch.delay('[["not", "a", "point"], ["x"]]').get() == {
        "written": 0, "dead_lettered": 2, "conflicts": 0}
    assert write_batch.delay("not json").get() == {"written": 0, "dead_lettered": 1, "conflicts": 0}

    def read_all(group: str) -> list:
        reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], group)
        try:
            return [letter for _, _, letter in reader.records(reader.cursor())]
        finally:
            reader.close()

    letters = read_all(env["KAFKA_GROUP_ID"])
    assert [letter.kind for letter in letters] == ["batch"] * 3
    assert all("malformed batch" in letter.reason for letter in letters)
    assert [letter.points for letter in letters[:2]] == [[["not", "a", "point"]], [["not", "a", "point"], ["x"]]]
    assert letters[2].points is None and letters[2].payload_text == "not json"

    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    writer = DeadLetterWriter(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"])
    try:
        report = replay(reader, writer, IngestPublisher(app, "ingest"),
                        TriageLog(Database(env["POSTGRES_DSN"]), env["KAFKA_DLQ_TOPIC"]))
    finally:
        reader.close()
    assert (report.read, report.still_invalid, report.batches_replayed) == (3, 3, 0)
    again = read_all("fresh-reader")[3:]
    assert [(letter.source, letter.attempt) for letter in again] == [("replay", 2)] * 3
    assert again[2].payload_text == "not json"


def test_point_the_store_refuses_is_dead_lettered_alone(eager, env: dict[str, str]) -> None:
    """A point only PostgreSQL refuses (NUL in text; the bridge rejects these before) goes to
    the dead letters with the server's reason; the rest of its batch is stored."""
    from tasks.ingest import write_batch
    from worker.core.events import points_to_builtins

    points = [decode_event(raw) for raw in demo_events(50, 5)]
    wire = points_to_builtins(points)
    wire[17][0] = "bad\x00id"
    assert write_batch.delay(wire).get() == {"written": 49, "dead_lettered": 1, "conflicts": 0}
    assert count_events(env["POSTGRES_DSN"]) == 49
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    letters = [letter for _, _, letter in reader.records(reader.cursor())]
    reader.close()
    assert len(letters) == 1 and letters[0].points == [wire[17]]
    assert "store rejected: PostgreSQL refused 1 point(s)" in letters[0].reason


@pytest.fixture
def store_down(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config.settings import get_settings

    monkeypatch.setenv("POSTGRES_DSN", "postgresql://nobody:x@127.0.0.1:1/none")
    monkeypatch.setenv("INGEST_OUTAGE_TOLERANCE_S", "5")
    get_settings.cache_clear()  # new settings: the tasks' resources are rebuilt from them


def test_unreachable_store_asks_for_a_retry_with_backoff(eager, store_down: None) -> None:
    """Eager mode does not run retries (it raises Retry); the real-worker run is
    tests/ingest/test_store_outage.py."""
    from celery.exceptions import Retry

    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(5, 2)]
    with pytest.raises(Retry) as caught:
        write_batch.apply(args=(points_to_wire(points),), retries=1, throw=True)
    assert 0 <= float(caught.value.when) <= 0.4  # type: ignore[arg-type]  # full jitter under backoff 0.2 s x 2**1


def test_unreachable_store_past_the_tolerance_dead_letters(eager, store_down: None,
                                                           env: dict[str, str]) -> None:
    """Outages are measured in time: a batch first tried 10 s ago, with a 5 s tolerance."""
    import time

    from tasks.ingest import write_batch

    points = [decode_event(raw) for raw in demo_events(5, 2)]
    result = write_batch.apply(args=(points_to_wire(points),), kwargs={"since": time.time() - 10}, retries=2,
                               throw=True)
    assert result.get() == {"written": 0, "dead_lettered": 5, "conflicts": 0}
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    letters = [letter for _, _, letter in reader.records(reader.cursor())]
    reader.close()
    assert letters[0].kind == "batch" and letters[0].attempt == 3
    assert "store unavailable for 10 s (INGEST_OUTAGE_TOLERANCE_S)" in letters[0].reason
    assert len(letters[0].points or []) == 5
