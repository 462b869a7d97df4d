"""The maintenance run on a real PostgreSQL 15: retention by dropping whole partitions,
history thinned to exactly what the policy keeps, short locks, one run at a time.

Times are chosen, never read from the clock: ``maintain(..., now)`` is what beat runs with
the current time and ``aggregator maintain --at`` with another.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg2
import pytest

from tests.support.helpers import q
from tests.support.thinning import thin
from worker.core.events import Point
from worker.core.partitions import HISTORY
from worker.core.retention import Plan, RetentionPolicy
from worker.db import partition_admin
from worker.db.connection import Database
from worker.maintenance import run as maintenance
from worker.maintenance.run import MaintenanceInFlight, maintain
from worker.ops.failures import exit_code
from worker.store.postgres.store import PostgresStore

pytestmark = pytest.mark.integration

S = 1_000_000_000
POLICY = RetentionPolicy(event_retention_days=366, history_full_days=2, history_hourly_days=4,
                         history_retention_days=6)
COLUMNS = ("score, count, mean_sentiment, sum_followers, abstract_difference, mean_age, mean_length, mean_questions, "
           "mean_exclamations, mean_bot_rating, mean_score, stddev, ema, kama, ker, projected_change, trending, "
           "mk_trend, mk_p")



def children(dsn: str, table: str) -> list[str]:
    return [name for (name,) in q(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                       "WHERE i.inhparent = %s::regclass ORDER BY 1", (table,))]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def event(event_id: str, when: datetime) -> Point:
    t_ns = int(when.timestamp()) * S
    return Point(event_id, "10.1/a", t_ns, 1.0, 0.5, 100, 120, 1, 0, 2.0, 0.25, 3.0, 1.0, 4.0, 5.0)


# --- events ------------------------------------------------------------------------------------
def test_retention_drops_whole_months_and_keeps_every_event_of_the_longest_span(pg_dsn: str) -> None:
    now = at("2026-02-10T12:00:00")
    store = PostgresStore(pg_dsn)
    written = [event(f"m{month:02d}-{day}", at(f"2025-{month:02d}-{day:02d}T06:00:00"))
               for month in range(1, 13) for day in (1, 15, 28)]
    written += [event(f"n{day}", at(f"2026-01-{day:02d}T06:00:00")) for day in (1, 31)]
    store.write(written)
    store.close()
    cutoff = now - timedelta(days=POLICY.event_retention_days)  # 2025-02-09T12:00
    year_ago = now - timedelta(days=365)

    report = maintain(Database(pg_dsn), POLICY, now)

    # January 2025 ended before the cutoff: its partition is gone, as a table (no DELETE).
    assert "discussion_event_p20250101" not in children(pg_dsn, "discussion_event")
    assert q(pg_dsn, "SELECT to_regclass('discussion_event_p20250101')") == [(None,)]
    assert [s.target for s in report.steps if s.action == "drop" and s.done] == ["discussion_event_p20250101"]
    # February 2025 holds events older than the cutoff and events inside the year: it stays.
    kept = {event_id for (event_id,) in q(pg_dsn, "SELECT event_id FROM discussion_event")}
    assert kept == {p.event_id for p in written if not p.event_id.startswith("m01")}
    assert all(p.event_id in kept for p in written if p.time_ns >= year_ago.timestamp() * S)
    assert min(p.time_ns for p in written if p.event_id in kept) < cutoff.timestamp() * S
    # This month and the next exist before the first batch of the month needs them.
    assert {"discussion_event_p20260201", "discussion_event_p20260301"} <= set(children(pg_dsn, "discussion_event"))
    # The day rollup holds exactly the kept events' days (rolled up in the same run), none of the dropped month's.
    assert q(pg_dsn, "SELECT min(day), sum(n) FROM event_rollup_day") == [(date(2025, 2, 1), len(kept))]
    assert q(pg_dsn, "SELECT count(*) FROM event_rollup_stale") == [(0,)]
    assert [s.detail for s in report.steps if s.action == "roll up"] == [f"{len(kept)} days, {len(kept)} rows"]
    # Again at the same time: nothing left to do.
    assert maintain(Database(pg_dsn), POLICY, now).plan == Plan()


def test_a_drop_waits_for_no_reader_and_is_finished_later(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_admin, "LOCK_TIMEOUT", "200ms")
    monkeypatch.setattr(maintenance, "_PAUSE_S", 0.0)
    PostgresStore(pg_dsn).write([event("old", at("2024-01-05T00:00:00")), event("new", at("2026-01-05T00:00:00"))])
    reader = psycopg2.connect(pg_dsn)
    with reader.cursor() as cur:  # a long transaction that has read the events (e.g. a trend query)
        cur.execute("SELECT count(*) FROM discussion_event")
    started = time.monotonic()
    report = maintain(Database(pg_dsn), POLICY, at("2026-01-10T00:00:00"))
    assert time.monotonic() - started < 10
    [step] = [s for s in report.steps if s.target == "discussion_event_p20240101"]
    assert not step.done and "next run" in step.detail
    with reader.cursor() as cur:  # the reader was never blocked; the expired month already left its view
        cur.execute("SET statement_timeout = '1s'")
        cur.execute("SELECT count(*) FROM discussion_event")
        assert cur.fetchone() == (1,)
    PostgresStore(pg_dsn).write([event("newer", at("2026-01-06T00:00:00"))])  # nor were writers
    reader.rollback()
    reader.close()
    maintain(Database(pg_dsn), POLICY, at("2026-01-10T00:00:00"))  # finishes the interrupted detach
    assert q(pg_dsn, "SELECT event_id FROM discussion_event ORDER BY 1") == [("new",), ("newer",)]
    assert q(pg_dsn, "SELECT to_regclass('discussion_event_p20240101')") == [(None,)]


def test_one_maintenance_run_at_a_time(pg_dsn: str) -> None:
    other = psycopg2.connect(pg_dsn)
    with other.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('aggregator.maintenance'))")
    with pytest.raises(MaintenanceInFlight) as caught:
        maintain(Database(pg_dsn), POLICY, at("2026-01-10T00:00:00"))
    assert exit_code(caught.value) == 75
    other.close()
    maintain(Database(pg_dsn), POLICY, at("2026-01-10T00:00:00"))


# --- history -----------------------------------------------------------------------------------
HistoryKey = tuple[str, str, datetime]


def seed_history(dsn: str, first_day: datetime, days: int, seed: int = 11) -> set[HistoryKey]:
    """Runs as beat schedules them (currently every 3 min, today every 10, week hourly,
    month every 3 h, year daily), each with a random subset of 5 DOIs (a DOI qualifies in
    some runs and not in others), over ``days`` days from ``first_day``."""
    rng = random.Random(seed)
    periods = {"currently": 180, "today": 600, "week": 3600, "month": 3 * 3600, "year": 86400}
    keys: set[HistoryKey] = set()
    for duration, period in periods.items():
        offset = rng.randrange(period)
        t = first_day + timedelta(seconds=offset)
        while t < first_day + timedelta(days=days):
            for doi in (f"10.1/{i}" for i in range(5)):
                if rng.random() < 0.7:
                    keys.add((doi, duration, t))
            t += timedelta(seconds=period)
    days_needed = {key[2].date() for key in keys}
    conn = psycopg2.connect(dsn)
    partition_admin.ensure(conn, HISTORY, HISTORY.ranges_of_days(days_needed))
    with conn, conn.cursor() as cur:
        cur.executemany(f"INSERT INTO trending_history (publication_doi, duration, {COLUMNS}, run_id, calculated_at) "
                        f"VALUES (%s, %s, 1.5, 3, 0.1, 100, 0.2, 50, 120, 1, 0, 2, 1.5, 0, 0, 0, 0, 0, 0, 'no trend', "
                        f"1, 'r', %s)", sorted(keys))
    conn.close()
    return keys


def history_by_day(dsn: str) -> dict[str, set[HistoryKey]]:
    found: dict[str, set[HistoryKey]] = {}
    for name, doi, duration, calculated_at in q(dsn, "SELECT tableoid::regclass::text, publication_doi, duration, "
                                                     "calculated_at FROM trending_history"):
        found.setdefault(name, set()).add((doi, duration, calculated_at))
    return found


def expected(keys: set[HistoryKey], now: datetime) -> dict[str, set[HistoryKey]]:
    by_day: dict[str, set[HistoryKey]] = {}
    for key in keys:
        by_day.setdefault(HISTORY.name(HISTORY.range_of(key[2])), set()).add(key)
    kept = {}
    for name, rows in by_day.items():
        day = HISTORY.parse(name)
        assert day is not None
        level = POLICY.history_level(day, now)
        if level is not None:
            kept[name] = thin(rows, level)
    return kept


def test_history_keeps_exactly_what_the_policy_says_as_days_age(pg_dsn: str) -> None:
    keys = seed_history(pg_dsn, at("2026-03-01T00:00:00"), days=8)
    assert len(keys) > 5000
    for now in (at("2026-03-09T00:30:00"), at("2026-03-10T00:30:00"), at("2026-03-12T06:00:00")):
        report = maintain(Database(pg_dsn), POLICY, now)
        assert not report.skipped, report.steps
        assert history_by_day(pg_dsn) == expected(keys, now), now
        levels = dict(q(pg_dsn, "SELECT day::text, level FROM trending_history_compaction"))
        for name in history_by_day(pg_dsn):
            day = HISTORY.parse(name)
            assert day is not None
            level = POLICY.history_level(day, now)
            assert levels.get(f"{day.start:%Y-%m-%d}", "full") == (level.name.lower() if level is not None else None)
        assert maintain(Database(pg_dsn), POLICY, now).plan.thin_history == []  # nothing is thinned twice
    # A thinned day keeps its indexes under the names they had before (the swap renames them).
    def indexes(day: str) -> list[str]:
        return [name.replace(day, "DAY") for (name,) in q(pg_dsn, "SELECT indexname FROM pg_indexes "
                                                                  "WHERE tablename = %s ORDER BY 1", (day,))]

    assert indexes("trending_history_p20260307") == indexes("trending_history_p20260311")  # daily, full
    assert len(indexes("trending_history_p20260307")) == 2


def test_a_run_into_a_thinned_day_is_thinned_again(pg_dsn: str) -> None:
    from worker.config.settings import Settings
    from worker.core.durations import DEFAULT_DURATIONS
    from worker.trends.lifecycle import RunSteps
    from worker.trends.planning import datetime_to_ns, new_token
    from worker.trends.state import PostgresRunState

    keys = seed_history(pg_dsn, at("2026-03-01T00:00:00"), days=2)
    now = at("2026-03-05T00:30:00")
    maintain(Database(pg_dsn), POLICY, now)
    assert q(pg_dsn, "SELECT day::text, level FROM trending_history_compaction ORDER BY 1") == [
        ("2026-03-01", "hourly"), ("2026-03-02", "hourly")]
    # `aggregator trends run currently --at 2026-03-01T10:10:00`: its rows land in a thinned day.
    past = at("2026-03-01T10:10:00")
    past_ns = datetime_to_ns(past)
    currently = next(d for d in DEFAULT_DURATIONS if d.name == "currently")
    store = PostgresStore(pg_dsn)
    store.write([Point(f"p{i}", f"10.1/{i % 2}", past_ns - (i + 1) * 60 * S, 2.0, 0.5, 100, 120, 1, 0, 2.0, 0.25,
                       3.0, 1.0, 4.0, 5.0) for i in range(30)])
    steps = RunSteps(store, PostgresRunState(pg_dsn), chunk_size=Settings(postgres_dsn=pg_dsn).trend_chunk_size)
    plan = steps.plan(currently, past_ns, new_token())
    for chunk in plan.chunks:
        steps.compute_chunk(currently, plan.run_id, past_ns, chunk)
    assert steps.finalize(currently, plan.run_id, past_ns)["status"] == "finalized"
    store.close()
    steps.state.close()
    assert q(pg_dsn, "SELECT day::text FROM trending_history_compaction") == [("2026-03-02",)]
    keys |= {(doi, "currently", past) for doi in ("10.1/0", "10.1/1")}
    maintain(Database(pg_dsn), POLICY, now)
    assert history_by_day(pg_dsn) == expected(keys, now)


def test_thinning_gives_way_to_a_reader_and_loses_no_row_written_meanwhile(
        pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partition_admin, "LOCK_TIMEOUT", "200ms")
    monkeypatch.setattr(maintenance, "_PAUSE_S", 0.0)
    keys = seed_history(pg_dsn, at("2026-03-01T00:00:00"), days=1)
    now = at("2026-03-04T00:30:00")
    reader = psycopg2.connect(pg_dsn)
    with reader.cursor() as cur:  # an operator's chart query in an open transaction
        cur.execute("SELECT count(*) FROM trending_history WHERE publication_doi = '10.1/0'")
    report = maintain(Database(pg_dsn), POLICY, now)
    assert [s.done for s in report.steps if s.action.startswith("thin")] == [False]
    assert history_by_day(pg_dsn) == {"trending_history_p20260301": keys}
    reader.rollback()
    reader.close()

    # A row written after the copy was made, before the swap: the swap stands down, and
    # the next run thins the day with that row.
    late = ("10.1/9", "today", at("2026-03-01T23:59:00"))
    real_fetch = partition_admin._fetch_one
    fetched: list[tuple[Any, ...]] = []

    def fetch_then_write_a_late_row(cur: Any) -> tuple[Any, ...]:
        row = real_fetch(cur)
        if not fetched:  # the first row fetched is the copy's (rows before, rows kept)
            fetched.append(row)
            q(pg_dsn, f"INSERT INTO trending_history (publication_doi, duration, {COLUMNS}, run_id, calculated_at) "
                      f"VALUES (%s, %s, 1.5, 3, 0.1, 100, 0.2, 50, 120, 1, 0, 2, 1.5, 0, 0, 0, 0, 0, 0, 'no trend', "
                      f"1, 'late', %s)", late)
        return row

    monkeypatch.setattr(partition_admin, "_fetch_one", fetch_then_write_a_late_row)
    [step] = [s for s in maintain(Database(pg_dsn), POLICY, now).steps if s.action.startswith("thin")]
    assert step.done and "rows arrived meanwhile" in step.detail
    assert history_by_day(pg_dsn) == {"trending_history_p20260301": keys | {late}}
    monkeypatch.setattr(partition_admin, "_fetch_one", real_fetch)
    maintain(Database(pg_dsn), POLICY, now)
    assert history_by_day(pg_dsn) == expected(keys | {late}, now)


@pytest.fixture
def cli_env(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from worker.config.settings import get_settings

    monkeypatch.setenv("POSTGRES_DSN", pg_dsn)
    monkeypatch.setenv("TREND_HISTORY_FULL_DAYS", "2")
    monkeypatch.setenv("TREND_HISTORY_HOURLY_DAYS", "4")
    monkeypatch.setenv("TREND_HISTORY_RETENTION_DAYS", "6")
    get_settings.cache_clear()
    yield pg_dsn
    get_settings.cache_clear()


def test_aggregator_maintain_prints_its_plan_and_steps(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.ops.cli import main

    seed_history(cli_env, at("2026-03-01T00:00:00"), days=2)
    assert main(["maintain", "--dry-run", "--at", "2026-03-05T00:30:00"]) == 0
    out = capsys.readouterr().out
    assert "plan (dry run, nothing changed):" in out
    assert "thin    trending_history days to hourly: 2 (2026-03-01 .. 2026-03-02)" in out
    assert q(cli_env, "SELECT count(*) FROM trending_history_compaction") == [(0,)]
    assert main(["maintain", "--at", "2026-03-05T00:30:00"]) == 0
    out, err = capsys.readouterr()
    assert "ok   thin hourly      trending_history_p20260301" in out
    assert "ok   thin hourly      trending_history_p20260301" in err  # also as it happened
    assert q(cli_env, "SELECT count(*) FROM trending_history_compaction") == [(2,)]


def test_trend_run_is_vacuumed_long_before_a_fifth_of_it_is_dead(pg_dsn: str) -> None:
    """The pruned runs' space is reused within days (migration 0006); the soak shows the effect."""
    assert q(pg_dsn, "SELECT reloptions FROM pg_class WHERE relname = 'trend_run'") == [
        (["autovacuum_vacuum_scale_factor=0.01"],)]


# --- the dead-letter triage log ------------------------------------------------------------------
def test_the_triage_log_of_letters_last_handled_before_the_event_cutoff_is_pruned_whole(pg_dsn: str) -> None:
    now = at("2026-02-10T12:00:00")
    cutoff = POLICY.event_cutoff(now)
    rows = [  # (offset, state, at): offset 1 old in full, 2 old then handled again lately, 3 recent
        (1, "redeadlettered", cutoff - timedelta(days=30)), (1, "parked", cutoff - timedelta(days=1)),
        (2, "parked", cutoff - timedelta(days=10)), (2, "replayed", cutoff + timedelta(days=1)),
        (3, "discarded", now - timedelta(days=1)),
    ]
    conn = psycopg2.connect(pg_dsn)
    with conn, conn.cursor() as cur:
        for offset, state, when in rows:
            cur.execute("INSERT INTO dead_letter_triage (topic, kafka_partition, kafka_offset, state, actor, at, why, "
                        "reason_kind, attempt) VALUES ('dlq', 0, %s, %s, 'test', %s, 'why', 'invalid-event', 1)",
                        (offset, state, when))
    conn.close()

    report = maintain(Database(pg_dsn), POLICY, now)

    step = next(s for s in report.steps if s.action == "prune dead_letter_triage")
    assert step.done and step.detail == "2 deleted"
    assert q(pg_dsn, "SELECT kafka_offset, state FROM dead_letter_triage ORDER BY kafka_offset, at") == [
        (2, "parked"), (2, "replayed"), (3, "discarded")]
