"""Setup adopts a running amba system's PostgreSQL, in either order, idempotently (SPEC §8).

amba's components create amba-event-stream's SQLAlchemy models with
``Base.metadata.create_all`` at start (``event_stream/dao.py``); these tests do the same,
with the real package (a test dependency) on real PostgreSQL 15, before or after the
product's migrations. Then a trend run, and amba's ORM and the streams API's SQL
(``tests/support/amba_streams_api.py``) must read the product's rows; setup again changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
import sqlalchemy as sa
from event_stream.models import model as amba
from sqlalchemy.orm import Session
from yoyo import get_backend, read_migrations

from tests.support.amba_streams_api import COVID_VIEW_COLUMNS, SQL_READS
from tests.support.helpers import q
from tests.support.trend_seed import seed_events
from worker.config.settings import Settings
from worker.core.durations import DEFAULT_DURATIONS
from worker.db.migrate import migrate
from worker.store.postgres.store import PostgresStore
from worker.trends.lifecycle import RunSteps
from worker.trends.planning import datetime_to_ns, new_token
from worker.trends.state import PostgresRunState

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
NOW_NS = datetime_to_ns(NOW)
CURRENTLY = next(d for d in DEFAULT_DURATIONS if d.name == "currently")

MIXED = "10.1101/Mixed.Case"  # amba's spelling; the product's events carry the DOI lowercased
COVID = "10.1101/covid.1"
UNKNOWN = "10.1101/no-publication"  # discussed, but no publication row (yet)



@pytest.fixture
def amba_engine(empty_pg_dsn: str) -> Iterator[sa.engine.Engine]:
    engine_ = sa.create_engine(empty_pg_dsn)
    yield engine_
    engine_.dispose()


def amba_starts(amba_engine: sa.engine.Engine) -> None:
    """What every amba component does at start (event_stream/dao.py, DAO.__init__)."""
    amba.Base.metadata.create_all(amba_engine)


def schema(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """Everything setup could change: columns, indexes, constraints, views."""
    return {
        "columns": q(dsn, "SELECT table_name, column_name, data_type, is_nullable, column_default "
                          "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"),
        "indexes": q(dsn, "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
                          "ORDER BY 1, 2"),
        "constraints": q(dsn, "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2"),
        "views": q(dsn, "SELECT matviewname, definition FROM pg_matviews ORDER BY 1"),
    }


def forget_adoption(dsn: str) -> None:
    """Make yoyo forget it applied 0004 (a restored bookkeeping table), so setup runs it again."""
    backend = get_backend(dsn)
    migrations = read_migrations(str(resources.files("worker.db") / "migrations"))
    with backend.lock():
        backend.unmark_migrations(migrations.filter(lambda m: m.id.startswith("0004")))
    backend.connection.close()


def seed_publications_with_amba_orm(amba_engine: sa.engine.Engine) -> dict[str, int]:
    """Publications, an author, a field of study and COVID-19 entities, written by amba's ORM."""
    with Session(amba_engine) as session:
        for doi, title in ((MIXED, "Mixed case title"), (COVID, "A COVID-19 cohort")):
            session.add(amba.Publication(doi=doi, title=title, type=amba.PublicationType.JOURNAL_ARTICLE,
                                         year=2021, citation_count=3, pub_date="2021-05-04"))
        author = amba.Author(name="Ada Lovelace")
        field = amba.FieldOfStudy(name="Epidemiology")
        session.add_all([author, field])
        session.flush()
        entities = [amba.DiscussionData(value=value, type="entity") for value in ("COVID-19", "Vaccine")]
        session.add_all(entities)
        session.flush()
        for doi in (MIXED, COVID):
            session.add(amba.PublicationAuthor(publication_doi=doi, author_id=author.id))
            session.add(amba.PublicationFieldOfStudy(publication_doi=doi, field_of_study_id=field.id))
        for entity, count in zip(entities, (9, 2), strict=True):
            session.add(amba.DiscussionDataPoint(publication_doi=COVID, discussion_data_point_id=entity.id,
                                                 count=count))
        session.commit()
        return {"author_id": int(author.id)}


def run_currently(dsn: str) -> dict[str, object]:
    """One `currently` run, phase by phase, as `aggregator trends run` does it."""
    settings = Settings(postgres_dsn=dsn, trend_chunk_size=200)
    steps = RunSteps(PostgresStore(dsn), PostgresRunState(dsn), chunk_size=settings.trend_chunk_size)
    try:
        plan = steps.plan(CURRENTLY, NOW_NS, new_token())
        for chunk in plan.chunks:
            steps.compute_chunk(CURRENTLY, plan.run_id, NOW_NS, chunk)
        return steps.finalize(CURRENTLY, plan.run_id, NOW_NS)
    finally:
        steps.store.close()
        steps.state.close()


def assert_adopted_shape(dsn: str) -> None:
    columns = dict(q(dsn, "SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = 'trending'"))
    amba_columns = {c.name for c in amba.Trending.__table__.columns}
    assert amba_columns <= set(columns), amba_columns - set(columns)
    assert {"mk_trend", "mk_p", "run_id", "calculated_at"} <= set(columns)
    assert "doi" not in columns and "title" not in columns  # the API leaves those unqualified
    assert columns["sum_followers"] == "bigint"
    assert columns["id"] == "bigint"
    constraints = dict(q(dsn, "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                              "WHERE conrelid = 'trending'::regclass"))
    assert constraints["trending_pkey"] == "PRIMARY KEY (id)"
    assert "FOREIGN KEY (publication_doi) REFERENCES publication(doi)" in constraints.values()
    indexes = dict(q(dsn, "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'trending'"))
    assert indexes["trending_publication_duration"].startswith("CREATE UNIQUE INDEX")
    view = {name for (name,) in q(dsn, "SELECT attname FROM pg_attribute WHERE attnum > 0 "
                                       "AND attrelid = 'trending_covid_papers'::regclass")}
    assert view >= COVID_VIEW_COLUMNS, COVID_VIEW_COLUMNS - view


def assert_amba_reads_the_run(dsn: str, amba_engine: sa.engine.Engine, ids: dict[str, int]) -> None:
    # amba's ORM: session.query(Trending), the call that failed on the product's old table.
    with Session(amba_engine) as session:
        rows = session.query(amba.Trending).filter_by(duration="currently").all()
        got = {(r.publication_doi, r.count, r.sum_followers, type(r.id)) for r in rows}
    followers = dict(q(dsn, "SELECT doi, sum(followers)::bigint FROM discussion_event GROUP BY doi"))
    assert got == {(COVID, 14, followers[COVID], int), (MIXED, 15, followers[MIXED.lower()], int)}
    # The streams API's SQL, through SQLAlchemy's text() as it runs it.
    params = {"duration": "currently", "limit": 10, "offset": 0, "search": "%i%", "doi": MIXED, **ids}
    with Session(amba_engine) as session:
        for name, sql in SQL_READS.items():
            statement = sa.text(sql)
            rows = session.execute(statement, {k: v for k, v in params.items() if f":{k}" in sql}).fetchall()
            assert rows, f"{name} returned nothing"
        covid = session.execute(sa.text("SELECT doi, title, trending_ranking FROM trending_covid_papers "
                                        "WHERE duration = 'currently'")).fetchall()
    assert [tuple(r) for r in covid] == [(COVID, "A COVID-19 cohort", 1)]


def seed_events_for_the_run(dsn: str) -> None:
    seed_events(dsn, NOW_NS, {MIXED.lower(): 15, COVID: 14, UNKNOWN: 12}, CURRENTLY.span_s)


@pytest.mark.parametrize("order", ["amba first", "setup first"])
def test_setup_in_either_order_then_amba_reads_the_products_rows(
    order: str, empty_pg_dsn: str, amba_engine: sa.engine.Engine
) -> None:
    dsn = empty_pg_dsn
    if order == "amba first":
        amba_starts(amba_engine)
        assert migrate(dsn)  # used to fail: relation "trending" already exists
    else:
        assert migrate(dsn)
        amba_starts(amba_engine)  # create_all leaves existing tables alone
    assert_adopted_shape(dsn)
    ids = seed_publications_with_amba_orm(amba_engine)
    seed_events_for_the_run(dsn)

    result = run_currently(dsn)
    assert (result["status"], result["rows"], result["without_publication"]) == ("finalized", 2, 1)
    assert q(dsn, "SELECT rows_written, rows_without_publication, rows_duplicate_publication FROM trend_run") == [
        (2, 1, 0)]
    # The DOI without publication: not in `trending` (foreign key), in the history.
    assert q(dsn, "SELECT count(*) FROM trending_history WHERE publication_doi = %s", (UNKNOWN,)) == [(1,)]
    assert sorted(q(dsn, "SELECT publication_doi FROM trending_history")) == sorted([
        (COVID,), (MIXED.lower(),), (UNKNOWN,)])
    assert_amba_reads_the_run(dsn, amba_engine, ids)

    # Setup again (and amba again) changes nothing; so does the adoption step itself.
    before = schema(dsn)
    rows_before = q(dsn, "SELECT * FROM trending ORDER BY id")
    assert migrate(dsn) == []
    amba_starts(amba_engine)
    assert schema(dsn) == before
    forget_adoption(dsn)
    assert migrate(dsn) == ["0004.adopt-amba-trending"]
    assert schema(dsn) == before
    assert q(dsn, "SELECT * FROM trending ORDER BY id") == rows_before


def test_the_original_aggregators_rows_and_view_are_adopted(empty_pg_dsn: str,
                                                             amba_engine: sa.engine.Engine) -> None:
    """amba ran with its original aggregator: trending holds its rows (a duplicate pair and
    a row without duration included) and its COVID view exists."""
    dsn = empty_pg_dsn
    amba_starts(amba_engine)
    ids = seed_publications_with_amba_orm(amba_engine)
    with Session(amba_engine) as session:
        session.add_all([
            amba.Trending(publication_doi=MIXED, duration="today", score=1.0, count=31, sum_followers=2_000_000_000),
            amba.Trending(publication_doi=MIXED, duration="today", score=2.0, count=32, sum_followers=7),
            amba.Trending(publication_doi=COVID, duration="week", score=3.0, count=40, sum_followers=1),
            amba.Trending(publication_doi=COVID, duration=None, score=4.0),
        ])
        session.commit()
    q(dsn, "CREATE MATERIALIZED VIEW trending_covid_papers AS SELECT t.* FROM trending t")
    assert migrate(dsn)
    assert_adopted_shape(dsn)
    # Of the duplicate pair the newest stays; the row without duration goes; the types widen.
    assert q(dsn, "SELECT publication_doi, duration, score, sum_followers, run_id FROM trending ORDER BY id") == [
        (MIXED, "today", 2.0, 7, None), (COVID, "week", 3.0, 1, None)]
    q(dsn, "UPDATE trending SET sum_followers = 5000000000 WHERE duration = 'week'")  # > 2^31 fits now
    q(dsn, "REFRESH MATERIALIZED VIEW CONCURRENTLY trending_covid_papers")
    assert q(dsn, "SELECT doi, duration, sum_followers FROM trending_covid_papers") == [(COVID, "week", 5_000_000_000)]

    seed_events_for_the_run(dsn)
    run_currently(dsn)
    assert_amba_reads_the_run(dsn, amba_engine, ids)
    # The other durations' rows stay until their own runs replace them.
    assert q(dsn, "SELECT duration, count(*) FROM trending GROUP BY 1 ORDER BY 1") == [
        ("currently", 2), ("today", 1), ("week", 1)]


# The view as migration 0002 created it before the adoption (databases that applied it).
_OLD_VIEW = """
CREATE MATERIALIZED VIEW trending_covid_papers AS
WITH ranked_entity AS (
    SELECT ddp.publication_doi, dd.value,
           row_number() OVER (PARTITION BY ddp.publication_doi ORDER BY ddp.count DESC, dd.value) AS entity_rank
    FROM discussion_data_point ddp JOIN discussion_data dd ON dd.id = ddp.discussion_data_point_id
    WHERE dd.type = 'entity'
),
covid AS (SELECT DISTINCT publication_doi FROM ranked_entity WHERE entity_rank <= 3 AND value LIKE '%COVID-19%')
SELECT t.*, p.id AS publication_id, p.title, p.pub_date, p.year, p.citation_count,
       row_number() OVER (PARTITION BY t.duration ORDER BY t.score DESC, t.publication_doi) AS trending_ranking
FROM trending t JOIN publication p ON p.doi = t.publication_doi JOIN covid c ON c.publication_doi = t.publication_doi
WITH DATA;
CREATE UNIQUE INDEX trending_covid_papers_key ON trending_covid_papers (publication_doi, duration);
"""


def test_a_database_of_the_products_old_schema_is_converged(empty_pg_dsn: str,
                                                            amba_engine: sa.engine.Engine) -> None:
    """0001-0003 applied in their old form, rows of an old run: 0004 converges it, and
    amba's components started afterwards work on it."""
    dsn = empty_pg_dsn
    backend = get_backend(dsn)
    migrations = read_migrations(str(resources.files("worker.db") / "migrations"))
    with backend.lock():
        backend.apply_migrations(backend.to_apply(migrations.filter(lambda m: not m.id.startswith("0004"))))
    backend.connection.close()
    q(dsn, _OLD_VIEW)
    q(dsn, "INSERT INTO publication (doi, title) VALUES (%s, 'Mixed case title'), (%s, 'Other')", (MIXED, COVID))
    values = "0.5, 1, 0.1, 100, 0.2, 50, 120, 1, 0, 2, 1.5, 0, 0, 0, 0, 0, 0, 'no trend', 1, 'old-run', now()"
    for doi in (MIXED.lower(), COVID, UNKNOWN):
        q(dsn, f"INSERT INTO trending (publication_doi, duration, score, count, mean_sentiment, sum_followers, "
               f"abstract_difference, mean_age, mean_length, mean_questions, mean_exclamations, mean_bot_rating, "
               f"mean_score, stddev, ema, kama, ker, projected_change, trending, mk_trend, mk_p, run_id, "
               f"calculated_at) VALUES (%s, 'today', {values})", (doi,))

    assert migrate(dsn) == ["0004.adopt-amba-trending"]
    amba_starts(amba_engine)
    assert_adopted_shape(dsn)
    # The lowercased DOI takes the publication's spelling; the one without publication leaves.
    assert sorted(q(dsn, "SELECT publication_doi, sum_followers FROM trending")) == sorted([(COVID, 100), (MIXED, 100)])
    with Session(amba_engine) as session:
        assert {r.publication_doi for r in session.query(amba.Trending)} == {COVID, MIXED}


def test_two_spellings_of_one_publication_publish_one_row(pg_dsn: str) -> None:
    """Events stored before DOIs were normalised may spell one publication twice: one row
    (the one with more events) is published, the other counted, and neither fails the run."""
    q(pg_dsn, "INSERT INTO publication (doi, title) VALUES (%s, 'Mixed case title')", (MIXED,))
    seed_events(pg_dsn, NOW_NS, {MIXED: 13, MIXED.lower(): 16, UNKNOWN: 11}, CURRENTLY.span_s)
    result = run_currently(pg_dsn)
    assert (result["rows"], result["without_publication"], result["duplicate_publication"]) == (1, 1, 1)
    assert q(pg_dsn, "SELECT publication_doi, count FROM trending") == [(MIXED, 16)]
    assert q(pg_dsn, "SELECT count(*) FROM trending_history") == [(3,)]
