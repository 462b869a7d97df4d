"""The maintenance task through a real worker: a tick fired twice (two beats, a redelivery)
runs once. (That each tick has its own slot is tests/core/test_cron.py's.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support.helpers import start_worker
from worker.core import names
from worker.core.cron import latest_tick

pytestmark = pytest.mark.e2e


def test_two_fires_of_one_slot_run_maintenance_once(env: dict[str, str], spawn) -> None:
    from worker.app import app
    from worker.celeryapp.resources import for_process

    start_worker(spawn, env, queue=names.MAINTENANCE_QUEUE, concurrency=2)
    # Both fires of the tick at once, as two beats send them.
    sent = [app.send_task(names.MAINTAIN, queue=names.MAINTENANCE_QUEUE) for _ in range(2)]
    results = [result.get(timeout=120) for result in sent]
    slot = latest_tick(for_process().settings.maintenance_schedule, datetime.now(UTC)).isoformat()
    assert sorted(result["status"] for result in results) == ["done", "duplicate"], results
    assert {result["slot"] for result in results} == {slot}
    done = next(result for result in results if result["status"] == "done")
    assert done.get("create", 0) >= 1  # it did the work: partitions ahead were created
    # A third fire of the same tick (a redelivery, a late beat) does nothing either.
    third = app.send_task(names.MAINTAIN, queue=names.MAINTENANCE_QUEUE).get(timeout=120)
    assert third == {"status": "duplicate", "slot": slot}
    claimed_by = for_process().maintenance_slots.holder(datetime.fromisoformat(slot))
    assert claimed_by is not None and claimed_by.endswith(next(r.id for r, res in zip(sent, results, strict=True)
                                                               if res["status"] == "done"))

