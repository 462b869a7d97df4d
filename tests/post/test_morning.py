"""The morning post from real trend rows in PostgreSQL to the fake X API (SPEC §6)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import psycopg2
import pytest
import tweepy

from tests.support.trend_seed import seed_events, seed_publications
from tests.support.x_recorder import Recorder
from worker.config.settings import Settings
from worker.post.morning import last_name, morning_post
from worker.post.x_client import XPoster
from worker.trends.planning import datetime_to_ns

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 5, 59, tzinfo=UTC)
DAY = date(2026, 11, 23)
CREDENTIALS: dict[str, Any] = {"x_consumer_key": "k", "x_consumer_secret": "s", "x_access_token": "t",
                               "x_access_token_secret": "ts"}


@pytest.fixture
def trended(env: dict[str, str]) -> Settings:
    """Trend rows for `today`: five COVID-19 papers (ranked by score), five others."""
    dsn = env["POSTGRES_DSN"]
    dois = [f"10.1101/p{i}" for i in range(10)]
    seed_events(dsn, datetime_to_ns(NOW), {doi: 31 + 5 * i for i, doi in enumerate(dois)}, 24 * 3600)
    seed_publications(dsn, covid=dois[:5], other=dois[5:])
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("UPDATE publication SET title = %s WHERE doi = %s",
                    ("Efficacy and safety of the mRNA-1273 SARS-CoV-2 vaccine in a very long titled trial", dois[4]))
    from worker.ops.cli import main

    assert main(["trends", "run", "today", "--at", NOW.isoformat()]) == 0
    return Settings(postgres_dsn=dsn, trending_url="https://example.org/trending")


def test_dry_run_text(trended: Settings) -> None:
    outcome = morning_post(trended, day=DAY, dry_run=True)
    assert outcome.status == "dry_run"
    lines = outcome.text.splitlines()
    assert lines[0] == "Todays trending COVID-19 papers:"
    # Most events -> highest decayed score: p4, p3, p2 lead; p4's long title is cut.
    assert lines[1] == "1. Lovelace4 et al. Efficacy and safety of the mRNA-1273 (...)"
    assert lines[2] == "2. Lovelace3 et al. Title of 10.1101/p3"
    assert lines[3] == "3. Lovelace2 et al. Title of 10.1101/p2"
    assert lines[4] == "https://example.org/trending"


def test_posts_once_per_day(trended: Settings, x_api: Recorder) -> None:
    settings = Settings(**{**dict(trended), **CREDENTIALS, "x_api_base_url": x_api.base_url})
    first = morning_post(settings, day=DAY)
    assert first.status == "posted" and first.tweet_id == "1234"
    second = morning_post(settings, day=DAY)
    assert second.status == "already_posted"
    assert len(x_api.requests) == 1 and x_api.requests[0].path == "/2/tweets"
    with psycopg2.connect(settings.postgres_dsn.get_secret_value()) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, tweet_id FROM morning_post WHERE day = %s", (DAY,))
        assert cur.fetchall() == [("posted", "1234")]


def test_refusal_releases_the_day(trended: Settings, x_api: Recorder) -> None:
    settings = Settings(**{**dict(trended), **CREDENTIALS, "x_api_base_url": x_api.base_url})
    x_api.status, x_api.answer = 503, {"title": "Service Unavailable"}
    with pytest.raises(tweepy.TwitterServerError):
        morning_post(settings, day=DAY)
    x_api.status, x_api.answer = 201, None
    assert morning_post(settings, day=DAY).status == "posted"  # the retry may post
    assert len(x_api.requests) == 2


def test_no_covid_paper_no_post(env: dict[str, str], x_api: Recorder) -> None:
    settings = Settings(postgres_dsn=env["POSTGRES_DSN"], **CREDENTIALS, x_api_base_url=x_api.base_url)
    poster = XPoster.from_settings(settings)
    assert morning_post(settings, day=DAY, poster=poster).status == "no_papers"
    assert x_api.requests == []


@pytest.mark.parametrize(("name", "expected"), [
    ("Ada Lovelace", "Lovelace"), ("Lovelace, Ada", "Lovelace"), ("Plato", "Plato"), ("  ", None), (None, None),
    ("José María García-Pérez", "García-Pérez"),
])
def test_last_name(name: str | None, expected: str | None) -> None:
    assert last_name(name) == expected
