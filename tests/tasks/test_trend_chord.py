"""The trend chord, eagerly, against real PostgreSQL and Redis (SPEC §4, §5, §7)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from tests.support.helpers import q
from tests.support.trend_seed import seed_events, seed_plain_publications, seed_publications
from worker.config.settings import Settings
from worker.core.aggregates import TrendRow
from worker.core.durations import DEFAULT_DURATIONS
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns, new_token
from worker.trends.state import PostgresRunState

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_NS = datetime_to_ns(NOW)
CURRENTLY = next(d for d in DEFAULT_DURATIONS if d.name == "currently")



@pytest.fixture
def seeded(env: dict[str, str]) -> dict[str, list[str]]:
    dsn = env["POSTGRES_DSN"]
    qualifying = [f"10.1101/q{i:04d}" for i in range(450)]
    few = [f"10.1101/few{i}" for i in range(20)]  # 10 events: not MORE than min_events
    counts = {doi: 11 + (i % 5) for i, doi in enumerate(qualifying)} | {doi: 10 for doi in few}
    seed_events(dsn, NOW_NS, counts, 6 * 3600)
    covid, other = qualifying[:7], qualifying[7:12]
    seed_publications(dsn, covid, other)
    seed_plain_publications(dsn, qualifying[12:] + few)
    return {"qualifying": qualifying, "few": few, "covid": covid, "other": other}


def test_run_chunks_and_finalizes(eager, env: dict[str, str], seeded: dict[str, list[str]]) -> None:
    from tasks.trends import run_trend
    from worker.celeryapp.resources import for_process

    result = run_trend.delay("currently", NOW.isoformat()).get()
    assert result["status"] == "started" and result["dois"] == 450 and result["chunks"] == 3
    dsn = env["POSTGRES_DSN"]
    assert q(dsn, "SELECT status, dois, chunks, rows_written FROM trend_run") == [("finalized", 450, 3, 450)]
    # One row per DOI is the key's (publication_doi, duration); the count says every DOI got it.
    assert q(dsn, "SELECT count(*) FROM trending WHERE duration = 'currently'") == [(450,)]
    assert q(dsn, "SELECT count(*) FROM trending WHERE publication_doi LIKE '10.1101/few%'") == [(0,)]
    assert q(dsn, "SELECT count(*), min(calculated_at) FROM trending_history") == [(450, NOW)]
    assert q(dsn, "SELECT count(*) FROM trending_staging") == [(0,)]
    counts = dict(q(dsn, "SELECT publication_doi, count FROM trending"))
    assert counts["10.1101/q0001"] == 12
    view = q(dsn, "SELECT publication_doi, trending_ranking, title FROM trending_covid_papers "
                  "WHERE duration = 'currently' ORDER BY trending_ranking")
    assert sorted(doi for doi, _, _ in view) == sorted(seeded["covid"])  # not the 4th-entity ones
    assert [rank for _, rank, _ in view] == list(range(1, 8))
    scores = [s for (s,) in q(dsn, "SELECT score FROM trending_covid_papers ORDER BY trending_ranking")]
    assert scores == sorted(scores, reverse=True)
    assert for_process().leases.of("currently").holder() is None  # released by the callback


def test_a_second_run_replaces_and_keeps_history(eager, env: dict[str, str], seeded) -> None:
    from tasks.trends import run_trend

    run_trend.delay("currently", NOW.isoformat()).get()
    later = NOW + timedelta(minutes=3)
    run_trend.delay("currently", later.isoformat()).get()
    dsn = env["POSTGRES_DSN"]
    assert q(dsn, "SELECT DISTINCT calculated_at FROM trending") == [(later,)]
    # 3 minutes later some DOIs no longer have more than 10 events in the span.
    (second,) = q(dsn, "SELECT rows_written FROM trend_run WHERE calculated_at = %s", (later,))[0]
    assert 400 < second < 450
    assert q(dsn, "SELECT count(*) FROM trending WHERE duration = 'currently'") == [(second,)]
    assert q(dsn, "SELECT calculated_at, count(*) FROM trending_history GROUP BY 1 ORDER BY 1") == [
        (NOW, 450), (later, second)]


def test_older_run_finalized_after_a_newer_changes_nothing(eager, env: dict[str, str], seeded) -> None:
    from tasks.trends import run_trend

    settings_dsn = env["POSTGRES_DSN"]
    run_trend.delay("currently", (NOW + timedelta(minutes=3)).isoformat()).get()
    before = q(settings_dsn, "SELECT publication_doi, score, calculated_at FROM trending ORDER BY 1")
    # A late run planned for an earlier time: its rows are staged, its finalize must not win.
    state = PostgresRunState(settings_dsn)
    state.start("old-run", CURRENTLY, NOW)
    state.stage_rows("old-run", [{"doi": "10.1101/zzz", **dict.fromkeys(
        ("score", "count", "mean_sentiment", "sum_followers", "abstract_difference", "mean_age", "mean_length",
         "mean_questions", "mean_exclamations", "mean_bot_rating", "mean_score", "stddev", "ema", "kama", "ker",
         "projected_change", "trending", "mk_p"), 1), "mk_trend": "no trend"}])
    assert state.finalize("old-run", CURRENTLY, NOW).status == "superseded"
    state.close()
    assert q(settings_dsn, "SELECT publication_doi, score, calculated_at FROM trending ORDER BY 1") == before
    assert q(settings_dsn, "SELECT status FROM trend_run WHERE run_id = 'old-run'") == [("superseded",)]


def test_readers_never_see_an_empty_duration(eager, env: dict[str, str], seeded) -> None:
    from tasks.trends import run_trend

    dsn = env["POSTGRES_DSN"]
    run_trend.delay("currently", NOW.isoformat()).get()
    seen: list[tuple[int, int, str]] = []
    done = threading.Event()

    def reader() -> None:
        conn = psycopg2.connect(dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not done.is_set():
                cur.execute("SELECT count(*), count(DISTINCT run_id), min(run_id) FROM trending "
                            "WHERE duration = 'currently'")
                seen.append(cur.fetchone() or (0, 0, ""))
        conn.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for minutes in range(1, 6):
            run_trend.delay("currently", (NOW + timedelta(minutes=minutes)).isoformat()).get()
    finally:
        done.set()
        thread.join()
    assert len(seen) > 20
    written = dict(q(dsn, "SELECT run_id, rows_written FROM trend_run"))
    assert len(written) == 6
    # Every snapshot: exactly one run's complete set; never empty, never a mix of two runs.
    assert all(runs == 1 and count == written[run_id] for count, runs, run_id in seen), set(seen)
    assert len({run_id for _, _, run_id in seen}) > 1  # the reader did see replacements happen


def test_run_is_skipped_while_the_previous_one_is_in_flight(eager, env: dict[str, str], seeded) -> None:
    from tasks.trends import run_trend
    from worker.celeryapp.resources import for_process

    lock = for_process().leases.of("currently")
    assert lock.acquire("other-run")
    try:
        assert run_trend.delay("currently", NOW.isoformat()).get() == {"status": "skipped", "duration": "currently"}
        assert not lock.release("not-the-holder")  # compare-and-delete: a stranger cannot release it
        assert q(env["POSTGRES_DSN"], "SELECT count(*) FROM trend_run") == [(0,)]
    finally:
        assert lock.release("other-run")
    assert run_trend.delay("currently", NOW.isoformat()).get()["status"] == "started"


def test_no_qualifying_doi_empties_the_duration(eager, env: dict[str, str], seeded) -> None:
    from tasks.trends import run_trend

    run_trend.delay("currently", NOW.isoformat()).get()
    later = NOW + timedelta(days=2)  # every event is now older than 6 h
    assert run_trend.delay("currently", later.isoformat()).get()["chunks"] == 0
    assert q(env["POSTGRES_DSN"], "SELECT count(*) FROM trending WHERE duration = 'currently'") == [(0,)]


def test_unknown_duration_is_a_clear_error(eager, env: dict[str, str]) -> None:
    from tasks.trends import run_trend

    with pytest.raises(ValueError, match="unknown duration 'hourly'"):
        run_trend.delay("hourly").get()


def test_cli_run_prints_phases(env: dict[str, str], seeded, capsys: pytest.CaptureFixture[str]) -> None:
    from worker.ops.cli import main

    assert main(["trends", "run", "currently", "--at", NOW.isoformat()]) == 0
    out, err = capsys.readouterr()
    assert "450 DOIs with more than 10 events" in out and "3 chunk(s)" in out
    assert "finalized: 450 rows" in out and "trending_covid_papers refreshed" in out
    assert err.splitlines()[-1].startswith("chunks: 3/3 (100%)")  # progress on stderr, not in the report


class _HistoryKeepingStore(PostgresStore):
    """The PostgreSQL store posing as one that keeps its own trend history (as InfluxDB does)."""

    keeps_trend_history = True

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.kept: list[tuple[str, int, list[dict[str, object]]]] = []

    def write_trend_history(self, duration: str, calculated_at_ns: int, rows: Sequence[TrendRow]) -> None:
        self.kept.append((duration, calculated_at_ns, [dict(row) for row in rows]))


@pytest.mark.parametrize("keeps", [True, False])
def test_finalize_hands_the_run_to_a_store_only_if_it_keeps_trend_history(env: dict[str, str], seeded,
                                                                          keeps: bool) -> None:
    dsn = env["POSTGRES_DSN"]
    store = _HistoryKeepingStore(dsn)
    store.keeps_trend_history = keeps
    steps = RunSteps(store, PostgresRunState(dsn), chunk_size=Settings(postgres_dsn=dsn).trend_chunk_size)
    try:
        plan = steps.plan(CURRENTLY, NOW_NS, new_token())
        for chunk in plan.chunks:
            steps.compute_chunk(CURRENTLY, plan.run_id, NOW_NS, chunk)
        assert steps.finalize(CURRENTLY, plan.run_id, NOW_NS)["status"] == "finalized"
    finally:
        store.close()
        steps.state.close()
    if not keeps:
        assert store.kept == []
        return
    [(name, at, rows)] = store.kept
    assert (name, at) == ("currently", NOW_NS)
    published = q(dsn, "SELECT publication_doi FROM trending_history WHERE run_id = %s", (plan.run_id,))
    assert sorted(str(row["doi"]) for row in rows) == sorted(doi for (doi,) in published) != []
