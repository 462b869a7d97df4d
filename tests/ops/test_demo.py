"""The dev stack's demo data stands in for amba's pipeline: publications with authors, and
COVID-19 papers among them, so `aggregator post --dry-run` on `aggregator dev` previews a
real post, as on compose's stack."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from tests.support.devstack.publications import COVID_EVERY, create_publications
from tests.support.helpers import q
from tests.support.trend_seed import seed_events
from worker.config.settings import Settings
from worker.ops.demo import demo_doi
from worker.post.morning import morning_post
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 5, 59, tzinfo=UTC)


def test_publications_are_idempotent_and_every_nth_is_a_covid_paper(pg_dsn: str) -> None:
    assert create_publications(pg_dsn, 12) == 12
    assert create_publications(pg_dsn, 12) == 12  # `aggregator dev` again on the same stack
    assert q(pg_dsn, "SELECT count(*), count(DISTINCT doi) FROM publication") == [(12, 12)]
    assert q(pg_dsn, "SELECT count(*) FROM publication_author") == [(12,)]
    covid = q(pg_dsn, "SELECT ddp.publication_doi FROM discussion_data_point ddp "
                      "JOIN discussion_data dd ON dd.id = ddp.discussion_data_point_id "
                      "WHERE dd.value = 'COVID-19' ORDER BY 1")
    assert [doi for (doi,) in covid] == sorted(demo_doi(i) for i in range(0, 12, COVID_EVERY))


def test_the_morning_post_previews_on_demo_data(env: dict[str, str]) -> None:
    dsn = env["POSTGRES_DSN"]
    dois = [demo_doi(i) for i in range(12)]
    create_publications(dsn, len(dois))
    seed_events(dsn, datetime_to_ns(NOW), {doi: 40 - i for i, doi in enumerate(dois)}, 24 * 3600)
    from worker.ops.cli import main

    assert main(["trends", "run", "today", "--at", NOW.isoformat()]) == 0
    outcome = morning_post(Settings(postgres_dsn=dsn), day=date(2026, 11, 23), dry_run=True)
    assert outcome.status == "dry_run" and outcome.text is not None
    assert outcome.text.splitlines()[0] == "Todays trending COVID-19 papers:"
    assert len(outcome.text.splitlines()) == 5  # three papers and the link
