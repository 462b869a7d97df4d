"""The morning post (SPEC §6): top three of `trending_covid_papers` for `today`, once a day.

The day is claimed in `morning_post` before the API call: X's refusal releases the claim,
an ambiguous failure (a timeout) keeps it, since a duplicate post is worse than a missing one.
"""

from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, date, datetime

import tweepy

from worker.config.settings import Settings
from worker.db.connection import Database
from worker.post.compose import Paper, compose_post
from worker.post.x_client import XPoster

log = logging.getLogger(__name__)

TOP_QUERY = """
SELECT v.publication_doi, coalesce(v.title, v.publication_doi),
       (SELECT a.name FROM publication_author pa JOIN author a ON a.id = pa.author_id
        WHERE pa.publication_doi = v.publication_doi ORDER BY a.id LIMIT 1)
FROM trending_covid_papers v
WHERE v.duration = %s
ORDER BY v.trending_ranking
LIMIT 3
"""


@dataclass
class PostOutcome:
    status: str  # "posted", "dry_run", "already_posted", "no_papers"
    text: str | None = None
    tweet_id: str | None = None


def last_name(name: str | None) -> str | None:
    """"Lovelace, Ada" and "Ada Lovelace" both give "Lovelace"; empty gives None."""
    name = (name or "").strip()
    if not name:
        return None
    if "," in name:
        return name.split(",", 1)[0].strip() or None
    return name.split()[-1]


def top_papers(database: Database, duration: str = "today") -> list[Paper]:
    with closing(database.connect()) as conn, conn, conn.cursor() as cur:
        cur.execute(TOP_QUERY, (duration,))
        return [Paper(doi=doi, title=title, author_last_name=last_name(author))
                for doi, title, author in cur.fetchall()]


def morning_post(settings: Settings, *, day: date | None = None, poster: XPoster | None = None,
                 dry_run: bool = False) -> PostOutcome:
    day = day or datetime.now(UTC).date()
    text = compose_post(top_papers(Database.from_settings(settings)), settings.trending_url)
    if text is None:
        log.info("no trending COVID-19 paper today: nothing to post", extra={"day": day.isoformat()})
        return PostOutcome("no_papers")
    poster = None if dry_run else (poster or XPoster.from_settings(settings))
    if poster is None:
        log.info("dry run: morning post not sent", extra={"day": day.isoformat(), "text": text})
        return PostOutcome("dry_run", text)
    conn = Database.from_settings(settings).connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO morning_post (day, status, text) VALUES (%s, 'posting', %s) "
                        "ON CONFLICT (day) DO NOTHING", (day, text))
            claimed = cur.rowcount == 1
        if not claimed:
            log.warning("morning post already claimed for this day; not posting again", extra={"day": day.isoformat()})
            return PostOutcome("already_posted", text)
        try:
            tweet_id = poster.post(text)
        except tweepy.HTTPException:
            with conn, conn.cursor() as cur:  # X answered with a refusal: nothing was posted
                cur.execute("DELETE FROM morning_post WHERE day = %s AND status = 'posting'", (day,))
            raise
        except Exception:
            log.error("morning post outcome unknown (claim kept, check the account before clearing it)",
                      extra={"day": day.isoformat()})
            raise
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE morning_post SET status = 'posted', tweet_id = %s, posted_at = now() WHERE day = %s",
                        (tweet_id, day))
        log.info("morning post sent", extra={"day": day.isoformat(), "tweet_id": tweet_id})
        return PostOutcome("posted", text, tweet_id)
    finally:
        conn.close()

