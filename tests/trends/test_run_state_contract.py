"""What the lifecycle relies on of :class:`~worker.trends.state.PostgresRunState` between a
run's steps, whichever process runs each."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.helpers import q
from tests.support.trend_seed import seed_plain_publications
from worker.core.durations import DEFAULT_DURATIONS
from worker.trends.math import TREND_COLUMNS
from worker.trends.state import PostgresRunState

pytestmark = pytest.mark.contract

CURRENTLY = next(d for d in DEFAULT_DURATIONS if d.name == "currently")
TODAY = next(d for d in DEFAULT_DURATIONS if d.name == "today")
AT = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
DOIS = [f"10.1101/s{i}" for i in range(6)]


def row(doi: str, score: float) -> dict[str, object]:
    return {"doi": doi, **dict.fromkeys(TREND_COLUMNS, score), "count": 12, "mk_trend": "increasing"}


@pytest.fixture(params=["postgres"])
def state(request: pytest.FixtureRequest) -> Iterator[PostgresRunState]:
    dsn = request.getfixturevalue("pg_dsn")
    seed_plain_publications(dsn, DOIS)
    implementation = PostgresRunState(dsn)
    yield implementation
    implementation.close()


def finalized_run(state: PostgresRunState, run_id: str, at: datetime, rows: list[dict[str, object]]) -> str:
    state.start(run_id, CURRENTLY, at)
    state.record_plan(run_id, len(rows), 1)
    state.stage_rows(run_id, rows)
    assert state.finalize(run_id, CURRENTLY, at).status == "finalized"
    return run_id


def test_a_started_run_is_running_until_it_ends(state: PostgresRunState) -> None:
    state.start("r1", CURRENTLY, AT)
    state.start("r1", CURRENTLY, AT)  # idempotent: a redelivered run task
    assert state.is_running("r1") and not state.is_running("never-started")
    state.fail("r1", "boom")
    assert not state.is_running("r1")


def test_staging_is_idempotent_per_doi(state: PostgresRunState) -> None:
    state.start("r1", CURRENTLY, AT)
    assert state.stage_rows("r1", [row(DOIS[0], 1.0), row(DOIS[1], 1.0)]) == 2
    assert state.stage_rows("r1", [row(DOIS[0], 2.0)]) == 1  # the chunk redelivered, computed again
    assert state.stage_rows("r1", []) == 0
    finalized_run(state, "r1", AT, [])
    assert {str(r["doi"]): r["score"] for r in state.run_rows(CURRENTLY, "r1")} == {DOIS[0]: 2.0, DOIS[1]: 1.0}


def test_finalize_replaces_the_durations_rows_and_leaves_the_others(state: PostgresRunState) -> None:
    finalized_run(state, "first", AT, [row(d, 1.0) for d in DOIS[:4]])
    state.start("other", TODAY, AT)
    state.stage_rows("other", [row(DOIS[5], 9.0)])
    assert state.finalize("other", TODAY, AT).status == "finalized"
    later = AT + timedelta(minutes=3)
    finalized_run(state, "second", later, [row(d, 2.0) for d in DOIS[2:]])
    assert state.run_rows(CURRENTLY, "first") == []  # replaced as a whole
    assert sorted(str(r["doi"]) for r in state.run_rows(CURRENTLY, "second")) == DOIS[2:]
    assert [str(r["doi"]) for r in state.run_rows(TODAY, "other")] == [DOIS[5]]


def test_an_older_run_finalized_late_is_superseded(state: PostgresRunState) -> None:
    finalized_run(state, "new", AT + timedelta(minutes=3), [row(DOIS[0], 1.0)])
    state.start("old", CURRENTLY, AT)
    state.stage_rows("old", [row(DOIS[1], 5.0)])
    result = state.finalize("old", CURRENTLY, AT)
    assert (result.status, result.rows) == ("superseded", 0)
    assert [str(r["doi"]) for r in state.run_rows(CURRENTLY, "new")] == [DOIS[0]]


def test_a_failed_run_keeps_the_published_rows_and_cannot_finalize(state: PostgresRunState) -> None:
    finalized_run(state, "good", AT, [row(DOIS[0], 1.0)])
    later = AT + timedelta(minutes=3)
    state.start("bad", CURRENTLY, later)
    state.stage_rows("bad", [row(DOIS[1], 5.0)])
    assert state.fail("bad", "a chunk failed")
    assert not state.fail("bad", "the chord ended")  # failed once: the errback's second call changes nothing
    assert state.finalize("bad", CURRENTLY, later).status == "abandoned"
    assert [str(r["doi"]) for r in state.run_rows(CURRENTLY, "good")] == [DOIS[0]]


def test_abandon_gives_up_every_other_running_run_of_the_duration(state: PostgresRunState) -> None:
    for run_id, duration in (("a", CURRENTLY), ("b", CURRENTLY), ("keep", CURRENTLY), ("t", TODAY)):
        state.start(run_id, duration, AT)
    assert sorted(state.abandon_runs(CURRENTLY, keep="keep")) == ["a", "b"]
    assert [state.is_running(r) for r in ("a", "b", "keep", "t")] == [False, False, True, True]
    assert state.abandon_runs(CURRENTLY, keep="keep") == []


def test_a_row_without_a_publication_is_counted_not_published(state: PostgresRunState, pg_dsn: str) -> None:
    state.start("r", CURRENTLY, AT)
    state.stage_rows("r", [row(DOIS[0], 1.0), row("10.1101/unknown", 1.0)])
    result = state.finalize("r", CURRENTLY, AT)
    assert (result.status, result.rows, result.without_publication) == ("finalized", 1, 1)
    assert q(pg_dsn, "SELECT count(*) FROM trending_history WHERE run_id = 'r'") == [(2,)]


def test_the_view_refresh_records_its_time(state: PostgresRunState, pg_dsn: str) -> None:
    finalized_run(state, "r", AT, [row(DOIS[0], 1.0)])
    state.refresh_covid_view("r")
    state.refresh_covid_view()  # without a run: nothing recorded, nothing fails
    assert q(pg_dsn, "SELECT refreshed_at IS NOT NULL FROM trend_run WHERE run_id = 'r'") == [(True,)]
