"""The trend tasks' own counters (the trends worker serves them: :mod:`worker.celeryapp.metrics`).

What the database does not record: runs skipped because the previous run held the lease.
Failed runs are in ``trend_run`` too (the exporter's ``aggregator_trend_runs_24h``); the
counter here sees them the moment the failure is recorded (any phase: plan, chunk, finalize).
"""

from __future__ import annotations

from prometheus_client import Counter

RUNS_SKIPPED = Counter("aggregator_trend_runs_skipped", "Runs not started: the previous run of the duration "
                       "still held its lease", ["duration"])
RUNS_FAILED = Counter("aggregator_trend_runs_failed", "Runs failed (plan, chunk or finalize)",
                      ["duration"])
RUNS_FINALIZED = Counter("aggregator_trend_runs_finalized", "Runs whose finalize published", ["duration"])
