"""`aggregator dlq show|replay|discard|list` on a real broker (Tansu), Redis and PostgreSQL:
every dead letter can be inspected, replayed selectively (or dry), discarded with a record,
and a letter that stays invalid is parked after DLQ_MAX_ATTEMPTS instead of coming back for ever.

Letters are written one per produce request: Tansu reports the high watermark per record
batch, and these tests count letters exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from confluent_kafka import Producer

from tests.support.helpers import q, queued_points
from worker.core.events import decode_event, points_to_builtins
from worker.ingest.deadletter import DeadLetter, DeadLetterReader, batch_letter, event_letter
from worker.ops.cli import main
from worker.ops.demo import demo_events

pytestmark = pytest.mark.integration

NOT_JSON = b"this is not json"
NOT_UTF8 = b'{"id": "\xff\xfe broken"}'


def put(env: dict[str, str], *records: DeadLetter | bytes) -> None:
    """Append records to the dead-letter topic, one confirmed produce request each."""
    producer = Producer({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"], "linger.ms": 0})
    for record in records:
        producer.produce(env["KAFKA_DLQ_TOPIC"], record if isinstance(record, bytes) else msgspec.json.encode(record))
        assert producer.flush(30) == 0


def valid_event(seed: int) -> bytes:
    return next(iter(demo_events(1, 1, seed=seed)))


def outage_batch(n: int, seed: int) -> DeadLetter:
    points = points_to_builtins([decode_event(raw) for raw in demo_events(n, 2, seed=seed)])
    return batch_letter(points, "store unavailable for 3700 s (INGEST_OUTAGE_TOLERANCE_S): refused", source="ingest",
                        attempt=4)


def invalid(raw: bytes = NOT_JSON, attempt: int = 1) -> DeadLetter:
    return event_letter(raw, "not valid JSON: expected value", source="bridge", origin="events/0@7", attempt=attempt)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["dlq", *args])
    out, err = capsys.readouterr()
    return code, out, err


def replay_report(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    code, out, err = run(capsys, "replay", *args)
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


def listed(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, list[str]]:
    """`dlq list` as {position: columns}."""
    code, out, err = run(capsys, "list", *args)
    assert code == 0, err
    return {line.split("\t")[0]: line.split("\t")[1:] for line in out.splitlines()}


def cursor(env: dict[str, str]) -> dict[int, int]:
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    try:
        return reader.cursor()
    finally:
        reader.close()


def on_topic(env: dict[str, str]) -> list[DeadLetter | None]:
    reader = DeadLetterReader(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], env["KAFKA_GROUP_ID"])
    try:
        return [letter for _, _, letter in reader.records({})]
    finally:
        reader.close()


def triage_rows(env: dict[str, str]) -> list[tuple[Any, ...]]:
    return q(env["POSTGRES_DSN"], "SELECT kafka_partition || '@' || kafka_offset, state, actor, why, reason_kind, "
                                  "attempt, record, at FROM dead_letter_triage ORDER BY id")


def test_show_prints_each_letter_in_full(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    put(env, invalid(), invalid(NOT_UTF8, attempt=2), outage_batch(2, 1), b"\x00\x01 not a letter")
    code, out, err = run(capsys, "show", "0@0", "0@1", "0@2", "0@3")
    assert code == 0, err
    first, second, batch, record = out.split("\n\n")
    assert "position:    0@0\nstate:       pending\nreason kind: invalid-json\n" in first
    assert "reason:      not valid JSON: expected value\n" in first
    assert "source:      bridge\n" in first and "attempts:    1\n" in first and "origin:      events/0@7\n" in first
    assert first.endswith("payload (text, 16 bytes):\nthis is not json")
    assert "attempts:    2\n" in second and "payload (not UTF-8: hex, 19 bytes):\n" in second
    assert "00000000  7b 22 69 64 22 3a 20 22 ff fe 20 62 72 6f 6b 65  |{\"id\": \".. broke|" in second
    assert "reason kind: store-unavailable\n" in batch and "kind:        batch (2 event(s))\n" in batch
    points = json.loads(batch.split("payload (batch points, JSON):\n")[1])
    assert len(points) == 2 and points[0][0] == decode_event(next(iter(demo_events(2, 2, seed=1)))).event_id
    assert "reason kind: unreadable\nrecord (not a dead letter) (control characters: hex, 15 bytes):\n" in record
    assert "00000000  00 01 20 6e 6f 74 20 61 20 6c 65 74 74 65 72     |.. not a letter|" in record

    code, out, err = run(capsys, "show", "0@1", "0@9")
    assert code == 2 and out == ""
    assert err.startswith("aggregator dlq show: no dead letter at 0@9 on "), err
    code, _, err = run(capsys, "show", "5@0")
    assert code == 2 and "no dead letter at 5@0" in err, "a partition the topic does not have"
    with pytest.raises(SystemExit) as usage:
        main(["dlq", "show", "zero@one"])
    assert usage.value.code == 2


def test_filtered_replay_takes_only_its_letters_and_leaves_the_rest_pending(
        env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    put(env, invalid(), outage_batch(3, 1), event_letter(valid_event(5), "invalid event: rule since relaxed",
                                                          source="bridge", origin=None),
        outage_batch(2, 2), invalid())

    report = replay_report(capsys, "--reason-kind", "store-unavailable", "--by", "alice")
    counts = (report["read"], report["batches_replayed"], report["events_replayed"], report["left_pending"])
    assert counts == (5, 2, 5, 3)
    assert queued_points(env["REDIS_URL"]) == 5
    assert cursor(env) == {0: 0}, "the cursor waits at the first letter left pending"
    assert list(listed(capsys)) == ["0@0", "0@2", "0@4"], "replayed letters are no longer pending"
    assert listed(capsys, "--all")["0@1"][5:7] == ["replayed", "store-unavailable"]

    report = replay_report(capsys, "--offsets", "0@2-3")
    assert (report["read"], report["events_replayed"], report["already_done"], report["left_pending"]) == (5, 1, 2, 2)
    assert queued_points(env["REDIS_URL"]) == 6, "the replayed batch at 0@3 is not published twice"

    report = replay_report(capsys)  # everything left: the two still-invalid letters come back as attempt 2
    assert (report["still_invalid"], report["already_done"], report["events_replayed"]) == (2, 3, 0)
    assert report["cursor"] == {"0": 5} and cursor(env) == {0: 5}
    pending = listed(capsys)
    assert list(pending) == ["0@5", "0@6"] and all(columns[4] == "attempt=2" for columns in pending.values())
    rows = triage_rows(env)
    assert [(r[0], r[1], r[2]) for r in rows[:2]] == [("0@1", "replayed", "alice"), ("0@3", "replayed", "alice")]
    assert sorted((r[0], r[1]) for r in rows[2:]) == [("0@0", "redeadlettered"), ("0@2", "replayed"),
                                                      ("0@4", "redeadlettered")]


def test_a_dry_run_reports_exactly_what_the_replay_then_does(env: dict[str, str],
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config.settings import get_settings

    monkeypatch.setenv("DLQ_MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    put(env, invalid(), outage_batch(2, 3), invalid(attempt=2), b"garbage", event_letter(
        valid_event(6), "invalid event: relaxed", source="bridge", origin=None), invalid())
    dry = replay_report(capsys, "--dry-run", "--offsets", "0@0-4")
    assert dry["dry_run"] is True
    assert dry["letters"] == {"0@0": "redeadletter", "0@1": "replay", "0@2": "park", "0@3": "park",
                              "0@4": "replay", "0@5": "pending"}
    assert (queued_points(env["REDIS_URL"]), len(on_topic(env)), triage_rows(env), cursor(env)) == (0, 6, [], {0: 0})
    assert replay_report(capsys, "--dry-run", "--offsets", "0@0-4") == dry, "a dry run changes nothing"

    real = replay_report(capsys, "--offsets", "0@0-4")
    assert {k: v for k, v in real.items() if k not in ("dry_run", "letters")} == {
        k: v for k, v in dry.items() if k not in ("dry_run", "letters")}
    done = {r[0]: r[1] for r in triage_rows(env)}
    assert done == {p: {"replay": "replayed", "redeadletter": "redeadlettered", "park": "parked"}[o]
                    for p, o in dry["letters"].items() if o != "pending"}
    assert queued_points(env["REDIS_URL"]) == 3 and len(on_topic(env)) == 7 and cursor(env) == {0: 5}
    again = replay_report(capsys, "--dry-run", "--include-parked")  # reads from the first parked letter, 0@2
    assert again["letters"] == {"0@2": "park", "0@3": "park", "0@5": "redeadletter", "0@6": "park"}, \
        "0@4, replayed above, is done and left out"


def test_discard_records_who_when_why_and_keeps_the_letter_visible(env: dict[str, str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    put(env, invalid(), invalid(NOT_UTF8), invalid())
    before = datetime.now(UTC)

    code, out, err = run(capsys, "discard", "0@1", "0@7", "--reason", "upstream bug 42", "--by", "alice")
    assert code == 2 and "no dead letter at 0@7" in err and out == ""
    assert triage_rows(env) == [], "a refused discard records nothing"

    code, out, err = run(capsys, "discard", "0@1", "--reason", "upstream bug 42, will not be fixed", "--by", "alice")
    assert code == 0, err
    assert out == "discarded 0@1 (invalid-json, attempt 1) by alice: upstream bug 42, will not be fixed\n"
    [(where, state, actor, why, kind, attempt, record, at)] = triage_rows(env)
    assert (where, state, actor, why, kind, attempt) == ("0@1", "discarded", "alice",
                                                         "upstream bug 42, will not be fixed", "invalid-json", 1)
    assert bytes(record) == msgspec.json.encode(on_topic(env)[1]), "a copy of the letter as it was"
    assert before - timedelta(seconds=5) <= at <= datetime.now(UTC)
    assert list(listed(capsys)) == ["0@0", "0@2"], "no longer pending"
    assert listed(capsys, "--all")["0@1"][5] == "discarded", "still visible with --all"
    _, shown, _ = run(capsys, "show", "0@1")
    assert "state:       discarded by alice at " in shown and ": upstream bug 42, will not be fixed\n" in shown
    assert cursor(env) == {0: 0}, "0@0 is still pending"

    code, _, err = run(capsys, "discard", "0@1", "--reason", "again")
    assert code == 2 and "already resolved, not discarded: 0@1 (discarded)" in err
    code, out, err = run(capsys, "discard", "0@0", "--reason", "also garbage")
    assert code == 0, err
    assert cursor(env) == {0: 2}, "the cursor moves over the discarded letters at its head"
    assert replay_report(capsys)["read"] == 1, "a replay reads only what is pending"


def test_a_letter_still_invalid_is_parked_after_max_attempts(env: dict[str, str],
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.config.settings import get_settings

    monkeypatch.setenv("DLQ_MAX_ATTEMPTS", "3")
    get_settings.cache_clear()
    put(env, invalid(), b"\xffnot a letter at all")
    first = replay_report(capsys)
    assert (first["still_invalid"], first["parked"], first["unreadable"]) == (1, 1, 1)
    second = replay_report(capsys)  # its third failure: parked
    assert (second["read"], second["still_invalid"], second["parked"]) == (1, 0, 1)
    letters = on_topic(env)
    assert [letter.attempt if letter else None for letter in letters] == [1, None, 2], "not appended again"
    assert replay_report(capsys)["read"] == 0, "parked: nothing left pending"
    assert listed(capsys) == {}
    parked = listed(capsys, "--parked")
    assert list(parked) == ["0@1", "0@2"] and parked["0@2"][4:7] == ["attempt=2", "parked", "invalid-json"]
    rows = {r[0]: r for r in triage_rows(env)}
    assert rows["0@2"][1] == "parked"
    assert rows["0@2"][3].startswith("still invalid, failed 3 time(s) (DLQ_MAX_ATTEMPTS=3): not valid JSON")
    assert bytes(rows["0@2"][6]) == msgspec.json.encode(letters[2])
    assert rows["0@1"][3] == "not a dead letter (unreadable record)"
    assert bytes(rows["0@1"][6]) == b"\xffnot a letter at all"

    # Once upstream is fixed, parked letters can be taken again, from behind the cursor.
    again = replay_report(capsys, "--include-parked", "--offsets", "0@2")
    assert (again["read"], again["parked"], again["left_pending"], again["already_done"]) == (2, 1, 1, 0)
    assert len(on_topic(env)) == 3, "still invalid: parked again, not appended"
    assert [r[1] for r in triage_rows(env)][-1] == "parked" and len(triage_rows(env)) == 4


def topic_retention(env: dict[str, str], topic: str) -> str:
    from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    admin = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP_SERVERS"]})
    value: str = admin.describe_configs([resource])[resource].result(30)["retention.ms"].value
    return value


def test_the_dead_letter_topic_keeps_letters_as_long_as_the_settings_say(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A topic created before KAFKA_DLQ_RETENTION_DAYS (the broker's 7 days) gets the setting's
    retention at the next setup or bridge start; a new one is created with it."""
    from worker.celeryapp.resources import ensure_dead_letter_topic
    from worker.config.settings import get_settings
    from worker.ingest.deadletter import ensure_topic

    week_ms = str(7 * 86_400_000)
    ensure_topic(env["KAFKA_BOOTSTRAP_SERVERS"], env["KAFKA_DLQ_TOPIC"], config={"retention.ms": week_ms})
    assert topic_retention(env, env["KAFKA_DLQ_TOPIC"]) == week_ms
    ensure_dead_letter_topic(get_settings())
    assert topic_retention(env, env["KAFKA_DLQ_TOPIC"]) == "-1", "the default: kept for ever"

    monkeypatch.setenv("KAFKA_DLQ_TOPIC", new := env["KAFKA_DLQ_TOPIC"] + "-new")
    monkeypatch.setenv("KAFKA_DLQ_RETENTION_DAYS", "30")
    get_settings.cache_clear()
    ensure_dead_letter_topic(get_settings())
    assert topic_retention(env, new) == str(30 * 86_400_000)


def test_a_letter_is_one_line_of_json() -> None:
    """The backup of the topic (docs/deploying.md) is one record a line: no letter spans two."""
    letters = [invalid(b"two\nlines\r\n"), invalid(NOT_UTF8), outage_batch(3, 5)]
    for letter in letters:
        line = msgspec.json.encode(letter)
        assert b"\n" not in line and b"\r" not in line
        assert json.loads(line)["reason"] == letter.reason
