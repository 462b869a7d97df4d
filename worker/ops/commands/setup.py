"""`aggregator setup`: migrations, the event store's layout, the day rollup of the events
already stored, the dead-letter topic (idempotent), then `aggregator selftest` (unless
``--no-selftest``): a failed check makes setup exit 1."""

from __future__ import annotations

import argparse
import os
from contextlib import closing
from datetime import UTC, datetime

from worker.celeryapp.resources import ensure_dead_letter_topic
from worker.config.settings import PLACEHOLDER_SECRET, Settings, secret_fields
from worker.core.failures import ConfigError
from worker.db import privileges
from worker.db.connection import Database
from worker.db.migrate import migrate
from worker.ops.selftest.run import report
from worker.store import open_store
from worker.store.postgres import rollup


def placeholder_secrets(settings: Settings, environ: dict[str, str]) -> list[str]:
    """The variables that still hold .env.example's ``change-me`` placeholders."""
    found = [name.upper() for name in secret_fields(Settings)
             if (value := getattr(settings, name)) is not None and PLACEHOLDER_SECRET in value.get_secret_value()]
    # Flower's login and Grafana's password are read by them; compose hands both to setup so
    # they are checked too.
    found += [name for name in ("FLOWER_BASIC_AUTH", "GRAFANA_ADMIN_PASSWORD")
              if PLACEHOLDER_SECRET in environ.get(name, "")]
    return found


def run(args: argparse.Namespace, settings: Settings) -> int:
    placeholders = placeholder_secrets(settings, dict(os.environ))
    if placeholders and not args.allow_placeholder_secrets:
        raise ConfigError(
            f"refusing to set up with placeholder secrets ({PLACEHOLDER_SECRET!r}) in {', '.join(placeholders)}",
            "Replace every change-me in .env; for a throwaway development stack only, "
            "pass --allow-placeholder-secrets.")
    # Trend tables live in PostgreSQL whatever the event store.
    database = Database.from_settings(settings)
    with closing(database.connect()) as conn:
        privileges.check(conn)
    applied = migrate(database.dsn, connect_timeout_s=database.connect_timeout_s)
    with closing(open_store(settings)) as store:
        store.setup()  # idempotent (for PostgreSQL the migrations above, already applied)
    with closing(database.connect(application_name="aggregator-setup")) as conn:
        # The events stored before the rollup existed (migration 0008), a month at a time;
        # an interrupted setup goes on where it stopped.
        rolled = rollup.roll_up(conn, datetime.now(UTC).date(), on_month=lambda r: print(
            f"rollup: {r.month} rolled up ({r.days} days, {r.rows} rows, {r.seconds:.1f} s)", flush=True))
        if rolled:
            # The select reads the rollup's key by index-only scans, which need the visibility
            # map: set now, not whenever autovacuum gets to the table (until then a run after
            # an upgrade would also read the table's page of every row), and the statistics.
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE) event_rollup_day")
    ensure_dead_letter_topic(settings)
    print(f"setup done: migrations applied={','.join(applied) or 'none'} store={store.name} "
          f"dead-letter topic={settings.kafka_dlq_topic} rollup days={sum(r.days for r in rolled)}", flush=True)
    return 0 if args.no_selftest else report(settings)
