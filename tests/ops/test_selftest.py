"""`aggregator selftest` against a real PostgreSQL (and InfluxDB 2 when ``INFLUXDB_V2_URL`` is set).

The self-test must pass on a healthy store, fail with one line naming DOI, column, the
store's value and the expected one when the store holds a wrong value, and in every case
(passed, failed, interrupted) leave every product table as it found it: row counts,
partitions, and the real rows seeded beside the probe.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.errors
import pytest

from tests.support.helpers import q
from tests.support.influx_live import admin_client, live_settings, live_store, needs_influx
from tests.support.trend_seed import S, roll_up, seed_events
from worker.config.settings import Settings, get_settings
from worker.db import partition_admin
from worker.ops import cli
from worker.ops.failures import EX_TEMPFAIL
from worker.ops.selftest import postgres
from worker.ops.selftest import run as selftest_run
from worker.ops.selftest.compare import Check
from worker.ops.selftest.postgres import LOCK_KEY
from worker.ops.selftest.probe import PREFIX
from worker.ops.selftest.run import report
from worker.store.postgres.store import PostgresStore

pytestmark = pytest.mark.integration

BUSY = f"{PREFIX}busy"
LINE = re.compile(r"^(ok  |FAIL) (\S.{25}) (\S.*)$")
REAL_NOW_NS = int(datetime(2026, 3, 2, 12, tzinfo=UTC).timestamp()) * S


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """``cli.main`` points the root logger at this test's captured stderr: put it back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def footprint(dsn: str) -> dict[str, Any]:
    """Every product table and partition with its row count, and the real events themselves."""
    tables = q(dsn, "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm') ORDER BY 1")
    counts = {name: q(dsn, f'SELECT count(*) FROM "{name}"')[0][0] for (name,) in tables}
    events = q(dsn, "SELECT event_id, doi, time, score, followers FROM discussion_event ORDER BY event_id, time")
    return {"tables": counts, "events": events}


@pytest.fixture
def seeded(env: dict[str, str], pg_dsn: str) -> Iterator[dict[str, Any]]:
    """Real events beside the probe: recent ones, and one in the probe's own month (July 2000),
    whose partition therefore exists before the self-test and must stay, with its row."""
    seed_events(pg_dsn, REAL_NOW_NS, {"10.1101/real.1": 40, "10.1101/real.2": 5}, 6 * 3600)
    seed_events(pg_dsn, int(datetime(2000, 7, 15, tzinfo=UTC).timestamp()) * S, {"10.1101/real-2000": 1}, 60)
    # A real run's staged row (19 trend columns: score, count, 15 more numbers, mk_trend, mk_p).
    q(pg_dsn, "INSERT INTO trending_staging VALUES ('today:20260302T120000Z:abcd', '10.1101/real.1', 1, 1, "
              f"{', '.join(['0'] * 15)}, 'no trend', 1)")
    roll_up(pg_dsn)  # what the maintenance task did with the real events' days
    before = footprint(pg_dsn)
    assert before["tables"]["discussion_event_p20000701"] == 1
    assert "discussion_event_p19990801" not in before["tables"]
    yield before
    assert footprint(pg_dsn) == before, "the self-test left something behind or changed real data"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    """The exit code and stdout's lines, then stderr's (the command's own error lines; the
    log lines, e.g. the store's "partitions created", left out)."""
    code = cli.main(list(args))
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.strip() and not line.startswith("ts=")]
    return code, [line for line in captured.out.splitlines() if line.strip()] + errors


def checks(lines: list[str]) -> list[re.Match[str]]:
    return [m for line in lines if (m := LINE.match(line))]


def test_selftest_passes_and_leaves_nothing_behind(seeded: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_cli(capsys, "selftest")
    print("\n".join(lines))  # the real output (docs/deploying.md shows it)
    assert code == 0, "\n".join(lines)
    found = checks(lines)
    assert [m[1] for m in found] == ["ok  "] * len(found), "\n".join(lines)
    names = [m[2].strip() for m in found]
    durations = ["currently", "today", "week", "month", "year"]
    assert names == ["events decoded", "events written", "events stored",
                     *(f"{what} {d}" for d in durations for what in ("qualifying DOIs", "trend inputs",
                                                                       "day rollup", "trend rows", "staged rows")
                       if what != "day rollup" or d == "year"),
                     "probe removed"]
    assert lines[0].startswith("selftest of the event store (PostgreSQL at postgresql://")
    assert lines[-1] == f"selftest passed: {len(found)} checks"
    removed = found[-1][3]
    assert "discussion_event_p19990801" in removed and "discussion_event_p20000701" not in removed, removed
    assert "2 of 8 probe DOIs have more than 10 events" in next(m[3] for m in found if m[2].strip()
                                                                 == "qualifying DOIs currently")


def _corrupting(dsn: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """count_per_doi that first changes one stored probe event's score: what a store that
    lost or mangled a value looks like to the reads after it."""

    def count_per_doi(self: PostgresStore, start_ns: int, stop_ns: int) -> dict[str, int]:
        q(dsn, "UPDATE discussion_event SET score = score + 0.5 WHERE event_id = 'selftest:busy:0'")
        return dict(original(self, start_ns, stop_ns))

    return count_per_doi


def test_a_corrupted_probe_row_fails_with_a_one_line_difference(seeded: dict[str, Any], pg_dsn: str,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(PostgresStore, "count_per_doi", _corrupting(pg_dsn, PostgresStore.count_per_doi))
    code, lines = run_cli(capsys, "selftest")
    print("\n".join(lines))
    assert code == 1, "\n".join(lines)
    failed = {m[2].strip(): m[3] for m in checks(lines) if m[1] == "FAIL"}
    # busy:0 is a second old: in every span; the rows computed from it differ too.
    assert set(failed) == {f"{what} {d}" for what in ("trend inputs", "trend rows")
                           for d in ("currently", "today", "week", "month", "year")} | {"day rollup year"}, \
        "\n".join(lines)
    got, want = re.fullmatch(rf"{re.escape(BUSY)}: sum_score (\S+) != expected (\S+) \(and \d+ more differences\)",
                             failed["trend inputs currently"]).groups()
    assert float(got) == float(want) + 0.5
    assert failed["trend rows today"].startswith(f"{BUSY}: score ")
    assert lines[-1] == f"selftest FAILED: 11 of {len(checks(lines))} checks"
    assert next(m for m in checks(lines) if m[2].strip() == "probe removed")[1] == "ok  "


def in_main_thread() -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
def test_an_interrupted_selftest_leaves_nothing_behind(how: str, seeded: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[str] = []
    original = PostgresStore.trend_inputs

    def interrupted(self: PostgresStore, duration: Any, now_ns: int, dois: Any) -> Any:
        calls.append(duration.name)
        if len(calls) == 2:
            if how == "SIGTERM":  # docker stop: the self-test turns it into an interruption
                in_main_thread()
                os.kill(os.getpid(), signal.SIGTERM)
            else:
                raise KeyboardInterrupt
        return original(self, duration, now_ns, dois)

    monkeypatch.setattr(PostgresStore, "trend_inputs", interrupted)
    code, lines = run_cli(capsys, "selftest")
    assert code == 130, "\n".join(lines)
    assert calls == ["currently", "today"]
    # currently's rows were staged before the interruption: removed with the events.
    assert any(line.startswith("ok   probe removed") and "8 staged rows" in line for line in lines), lines


def test_a_signal_during_the_removal_waits_for_it(seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    in_main_thread()
    original = postgres.PostgresScratch.remove

    def impatient(self: postgres.PostgresScratch, *args: Any) -> Any:
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, while the probe is being removed
        return original(self, *args)

    monkeypatch.setattr(postgres.PostgresScratch, "remove", impatient)
    code, lines = run_cli(capsys, "selftest")
    assert code == 130, "\n".join(lines)
    assert lines[-1].startswith("ok   probe removed"), lines


def test_a_partition_locked_past_the_retries_is_a_failed_check(seeded: dict[str, Any], pg_dsn: str,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A long query on discussion_event keeps the detach waiting past its lock timeout: the
    empty partition stays for the maintenance to drop (it is past the retention)."""
    attempts: list[str] = []

    def locked(conn: Any, layout: Any, part: Any) -> None:
        attempts.append(part.name)
        raise psycopg2.errors.LockNotAvailable("canceling statement due to lock timeout")

    monkeypatch.setattr(postgres, "_DROP_PAUSES_S", (0.0, 0.0, None))
    monkeypatch.setattr(partition_admin, "detach_and_drop", locked)
    code, lines = run_cli(capsys, "selftest")
    assert code == 1, "\n".join(lines)
    assert attempts == ["discussion_event_p19990801"] * 3
    assert lines[-2] == ("FAIL probe removed              partition discussion_event_p19990801 (empty) not dropped: "
                         "canceling statement due to lock timeout; the hourly maintenance drops it (it is past the "
                         "retention)")
    assert q(pg_dsn, "SELECT count(*) FROM discussion_event_p19990801") == [(0,)]
    q(pg_dsn, "DROP TABLE discussion_event_p19990801")  # what the maintenance would do


def test_a_failing_removal_is_reported(seeded: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A removal that fails is a FAIL line, then the error as every command reports it
    (PostgreSQL did not answer: 69)."""

    def broken(*args: Any, **kwargs: Any) -> None:
        raise psycopg2.OperationalError("connection to server lost")

    monkeypatch.setattr(partition_admin, "detach_and_drop", broken)
    code, lines = run_cli(capsys, "selftest")
    assert code == 69, "\n".join(lines)
    assert any(line.startswith("FAIL probe removed") and "connection to server lost" in line for line in lines)
    monkeypatch.undo()
    q(get_settings().postgres_dsn.get_secret_value(),
      "DROP TABLE IF EXISTS discussion_event_p19990801")  # what the broken removal left (its rows are gone)


def test_setup_runs_the_selftest_unless_told_not_to(env: dict[str, str], pg_dsn: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = run_cli(capsys, "setup")
    assert code == 0, "\n".join(lines)
    assert lines[0].startswith("setup done: ")
    assert lines[-1].startswith("selftest passed: ")
    code, lines = run_cli(capsys, "setup", "--no-selftest")
    assert code == 0 and len(lines) == 1 and lines[0].startswith("setup done: "), lines


def test_setup_rolls_up_the_stored_events_and_vacuums_the_rollup(env: dict[str, str], pg_dsn: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Events stored before the rollup (their days marked) are rolled up by setup, a line per
    month; the rollup is vacuumed (the select's index-only scans need its visibility map) and analyzed."""
    now_ns = int(datetime.now(UTC).timestamp()) * S
    seed_events(pg_dsn, now_ns, {"10.1/setup": 50}, span_s=20 * 86_400)
    code, lines = run_cli(capsys, "setup", "--no-selftest")
    assert code == 0, "\n".join(lines)
    assert any(re.fullmatch(r"rollup: \d{4}-\d{2} rolled up \(\d+ days, \d+ rows, [\d.]+ s\)", line)
               for line in lines), lines
    assert q(pg_dsn, "SELECT vacuum_count, analyze_count FROM pg_stat_user_tables "
                     "WHERE relname = 'event_rollup_day'") == [(1, 1)]


def test_setup_fails_when_a_check_fails(env: dict[str, str], pg_dsn: str, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(PostgresStore, "count_per_doi", _corrupting(pg_dsn, PostgresStore.count_per_doi))
    code, lines = run_cli(capsys, "setup")
    assert code == 1, "\n".join(lines)
    assert lines[-1].startswith("selftest FAILED: ")


def test_one_selftest_at_a_time(env: dict[str, str], pg_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    holder = psycopg2.connect(pg_dsn)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_KEY,))
        code, lines = run_cli(capsys, "selftest")
    finally:
        holder.close()
    assert code == EX_TEMPFAIL, lines
    assert lines[0] == "aggregator selftest: another selftest is in flight; not starting a second one", lines


def test_the_influxdb_flow_with_postgresql_standing_in_for_the_scratch_bucket(
        env: dict[str, str], pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a server: the InfluxDB flow of the self-test (the layout first, the probe at the
    current time within the scratch bucket's retention, the store opened on the scratch
    bucket, the bucket removed at the end), the scratch bucket's store played by PostgreSQL."""
    opened: list[str] = []
    deleted: list[str] = []

    class StandIn:
        def __init__(self, settings: Settings) -> None:
            self.scratch = ""

        def layout_checks(self) -> list[Check]:
            return [Check("bucket currently", True, "retention 400 d")]

        def create_scratch(self, name: str) -> None:
            self.scratch = name

        def delete_scratch(self) -> str:
            deleted.append(self.scratch)
            q(pg_dsn, "DELETE FROM discussion_event WHERE doi LIKE %s", (f"{PREFIX}%",))
            return f"bucket {self.scratch} deleted"

        def close(self) -> None:
            pass

    def open_scratch(settings: Settings) -> PostgresStore:
        opened.append(settings.influxdb_v2_bucket)
        return PostgresStore(pg_dsn)

    monkeypatch.setattr(selftest_run, "InfluxAdmin", StandIn)
    monkeypatch.setattr(selftest_run, "open_store", open_scratch)
    settings = get_settings().model_copy(update={"event_store": "influxdb", "influxdb_v2_url": "http://influx:8086"})
    lines: list[str] = []
    code = report(settings, emit=lines.append)
    assert code == 0, "\n".join(lines)
    assert opened == deleted and opened[0].startswith("selftest-"), (opened, deleted)
    assert lines[0].startswith(f"selftest of the event store (InfluxDB at http://influx:8086, scratch bucket "
                               f"{opened[0]}): ")
    assert "edge events of month, year not probed (older than the scratch bucket's 8 d retention)" in lines[0]
    assert lines[1] == "ok   bucket currently           retention 400 d"
    assert lines[-2] == f"ok   probe removed              40 staged rows, bucket {opened[0]} deleted"
    assert q(pg_dsn, "SELECT count(*) FROM discussion_event") == [(0,)]


@pytest.mark.influx_live
@needs_influx
def test_selftest_on_a_live_influxdb(env: dict[str, str]) -> None:
    """The layout setup created (a layout of the test's own), the probe in a scratch bucket,
    and no scratch bucket left."""
    settings: Settings = live_settings(retention_days=400)
    with live_store(settings) as store:
        lines: list[str] = []
        code = report(settings, emit=lines.append)
        print("\n".join(lines))
        assert code == 0, "\n".join(lines)
        assert any(line.startswith(f"ok   bucket {store.layout.events_bucket}") for line in lines), lines
        client = admin_client(settings)
        try:
            left = [b.name for b in client.buckets_api().find_buckets(limit=100).buckets or []
                    if b.name.startswith(f"{settings.influxdb_bucket_prefix}selftest-")]
        finally:
            client.close()
        assert left == []
