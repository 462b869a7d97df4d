"""Seeding events and upstream tables for the trend tests."""

from __future__ import annotations

import random
from collections.abc import Sequence
from contextlib import closing
from datetime import date

import psycopg2

from worker.core.events import Point
from worker.store import EventStore
from worker.store.postgres import rollup
from worker.store.postgres.store import PostgresStore

S = 1_000_000_000


def seed_events(target: str | EventStore, now_ns: int, counts: dict[str, int], span_s: int, seed: int = 3,
                id_prefix: str = "") -> list[Point]:
    """Events at random microsecond times in the ``span_s`` before ``now_ns``, written to
    ``target`` (a PostgreSQL DSN, or any event store)."""
    rng = random.Random(seed)
    points = []
    for doi, n in counts.items():
        for i in range(n):
            age_s = rng.uniform(0, span_s * 0.999)
            t_ns = now_ns - int(age_s * S) // 1000 * 1000
            points.append(Point(f"{id_prefix}{doi}#{i}", doi, t_ns, rng.uniform(1, 50),
                                rng.uniform(-1, 1), rng.randint(0, 5000), rng.randint(10, 280), rng.randint(0, 2),
                                rng.randint(0, 2), rng.choice((1.0, 5.0, 10.0)), rng.random(), 1.0, 1.0, 2.0, 3.0))
    store = PostgresStore(target) if isinstance(target, str) else target
    for start in range(0, len(points), 5000):
        store.write(points[start:start + 5000])
    if isinstance(target, str):
        store.close()
    return points


def roll_up(dsn: str, before: date = date.max) -> list[rollup.Rolled]:
    """What the maintenance task does every hour: roll up the marked days before ``before``."""
    with closing(psycopg2.connect(dsn)) as conn:
        return rollup.roll_up(conn, before)


def seed_publications(dsn: str, covid: Sequence[str], other: Sequence[str]) -> None:
    """Publications with authors; `covid` ones have COVID-19 among their top-3 entities,
    `other` ones have it only as their 4th entity (must NOT qualify for the view)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        entities = {}
        for value in ("COVID-19", "SARS-CoV-2", "Vaccine", "Influenza", "Climate"):
            cur.execute("INSERT INTO discussion_data (value, type) VALUES (%s, 'entity') RETURNING id", (value,))
            entities[value] = cur.fetchone()[0]
        cur.execute("INSERT INTO discussion_data (value, type) VALUES ('COVID-19 hashtag', 'hashtag') RETURNING id")
        hashtag = cur.fetchone()[0]
        for i, doi in enumerate([*covid, *other]):
            cur.execute("INSERT INTO publication (doi, title, year) VALUES (%s, %s, 2021)", (doi, f"Title of {doi}"))
            cur.execute("INSERT INTO author (name) VALUES (%s) RETURNING id", (f"Ada Lovelace{i}",))
            cur.execute("INSERT INTO publication_author VALUES (%s, %s)", (doi, cur.fetchone()[0]))
            if doi in covid:
                counts = {"COVID-19": 5, "SARS-CoV-2": 9, "Vaccine": 7, "Influenza": 1}
            else:
                counts = {"COVID-19": 1, "SARS-CoV-2": 9, "Vaccine": 7, "Influenza": 3}
            for value, count in counts.items():
                cur.execute("INSERT INTO discussion_data_point VALUES (%s, %s, %s)", (doi, entities[value], count))
            cur.execute("INSERT INTO discussion_data_point VALUES (%s, %s, 100)", (doi, hashtag))


def seed_plain_publications(dsn: str, dois: Sequence[str]) -> None:
    """Publications without authors or entities: only DOIs a publication has are published
    in ``trending`` (its foreign key to ``publication.doi``)."""
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO publication (doi, title) VALUES (%s, %s) ON CONFLICT (doi) DO NOTHING",
                        [(doi, f"Title of {doi}") for doi in dois])
    conn.close()
