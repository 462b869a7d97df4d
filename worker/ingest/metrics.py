"""The ingest task's own counters (a worker serves them: :mod:`worker.celeryapp.metrics`).

Module-level metric objects, as prometheus-client intends: in a prefork child they write to
the multiprocess directory, and the worker's main process sums every child's values.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

BATCHES = Counter("aggregator_ingest_batches", "Ingest task attempts by outcome: written, retried (the store "
                  "did not answer), dead_lettered, rejected (some points refused by the store), rate_limited (no "
                  "write token within the wait bound: retried with a countdown)", ["outcome"])
EVENTS_WRITTEN = Counter("aggregator_ingest_events_written", "Events written to the event store")
EVENTS_DEAD_LETTERED = Counter("aggregator_ingest_events_dead_lettered", "Events the ingest task dead-lettered")
CONFLICTS = Counter("aggregator_ingest_conflicts", "Events that reused a stored id with other content (not stored)")
WRITE_SECONDS = Histogram("aggregator_ingest_write_seconds", "Seconds one batch's store write took (successful writes)",
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0))
OUTAGE_SECONDS = Gauge("aggregator_ingest_outage_seconds", "How long the batch retried last has waited for the "
                       "store (0 once a write succeeds); the largest over the live processes",
                       multiprocess_mode="livemax")
