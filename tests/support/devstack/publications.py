"""The ``publication`` rows of the demo DOIs (:func:`worker.ops.demo.demo_doi`): upstream's
job in production (amba's pipeline), the local stack's here."""

from __future__ import annotations

import random
from typing import Any

import psycopg2

from worker.ops.demo import demo_doi

WORDS = ("covid-19", "sars-cov-2", "vaccine", "efficacy", "cohort", "randomized", "trial", "immune",
         "response", "variant", "transmission", "mortality", "meta-analysis", "protein", "spike",
         "antibody", "long", "children", "study", "risk", "climate", "ocean", "genome", "neural")


def demo_title(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 16))).capitalize()


_NAMES = ("Ada Lovelace", "Grace Hopper", "Rosalind Franklin", "Lise Meitner", "Emmy Noether", "Chien-Shiung Wu",
          "Barbara McClintock", "Dorothy Hodgkin")


def demo_author(rng: random.Random) -> str:
    return rng.choice(_NAMES)


#: Every COVID_EVERY-th demo DOI (from the most discussed one on) is a COVID-19 paper: so
#: the local stack's `today` trend has rows in `trending_covid_papers`, and `aggregator post
#: --dry-run` previews a real post.
COVID_EVERY = 4
_ENTITIES = ("COVID-19", "Vaccine", "Climate")


def create_publications(dsn: str, dois: int, *, seed: int = 7) -> int:
    """The ``publication`` rows of the demo DOIs, as amba's pipeline creates them upstream.

    Only publications the ``publication`` table knows are published in ``trending`` (its
    foreign key; ``worker.trends.state``), so the local stack stands in for the pipeline:
    each publication gets a title and an author, and every :data:`COVID_EVERY`-th one has
    COVID-19 among its top entities (the view ``trending_covid_papers`` takes those).
    Idempotent.
    """
    rng = random.Random(seed)
    rows = [(demo_doi(i), demo_title(rng)) for i in range(dois)]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO publication (doi, title) VALUES (%s, %s) ON CONFLICT (doi) DO NOTHING", rows)
        entity_ids = {}
        for value in _ENTITIES:
            cur.execute("INSERT INTO discussion_data (value, type) VALUES (%s, 'entity') "
                        "ON CONFLICT (value, type) DO UPDATE SET value = EXCLUDED.value RETURNING id", (value,))
            entity_ids[value] = _one(cur)
        for index, (doi, _) in enumerate(rows):
            cur.execute("SELECT 1 FROM publication_author WHERE publication_doi = %s", (doi,))
            if cur.fetchone() is None:
                cur.execute("INSERT INTO author (name) VALUES (%s) RETURNING id", (demo_author(rng),))
                cur.execute("INSERT INTO publication_author VALUES (%s, %s)", (doi, _one(cur)))
            counts = {"COVID-19": 9 if index % COVID_EVERY == 0 else 0, "Vaccine": 5, "Climate": 3}
            cur.executemany("INSERT INTO discussion_data_point VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                            [(doi, entity_ids[value], count) for value, count in counts.items() if count])
    conn.close()
    return len(rows)


def _one(cur: Any) -> int:
    row = cur.fetchone()
    if row is None:  # pragma: no cover - RETURNING always gives the row
        raise RuntimeError("expected a row")
    return int(row[0])
