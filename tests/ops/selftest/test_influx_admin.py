"""The self-test's InfluxDB side without a server (``worker.ops.selftest.influx``): what it asks
the client, and how it reads the answers (influxdb-client's own domain objects). The same
code against a real server: ``tests/ops/test_selftest.py`` with ``INFLUXDB_V2_URL``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from influxdb_client.domain.bucket import Bucket
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.task import Task

from worker.config.settings import Settings
from worker.ops.selftest.influx import SCRATCH_RETENTION_S, InfluxAdmin
from worker.store.influx.store import InfluxStore
from worker.store.influx.tasks import task_flux

pytestmark = pytest.mark.unit

SETTINGS = Settings(_env_file=None, event_store="influxdb", influxdb_v2_url="http://127.0.0.1:1",
                    influxdb_v2_token="t", influxdb_bucket_prefix="p_")


class FakeClient:
    """Buckets and tasks as a server set up by `aggregator setup` returns them."""

    def __init__(self, admin: InfluxAdmin) -> None:
        self.buckets: dict[str, Bucket] = {
            spec.name: Bucket(id=f"id-{spec.name}", name=spec.name, retention_rules=[
                BucketRetentionRules(type="expire", every_seconds=spec.retention_s)])
            for spec in admin.layout.buckets()}
        self.tasks = {spec.name: Task(id=f"t-{spec.name}", org_id="o", name=spec.name, status="active",
                                      cron=spec.cron, offset=f"{spec.offset_s}s", flux=task_flux(admin.layout, spec),
                                      last_run_status="success")
                      for spec in admin.layout.tasks()}
        self.created: list[dict[str, Any]] = []
        self.deleted: list[str] = []

    def buckets_api(self) -> Any:
        def find_buckets(name: str, org: str) -> Any:
            assert org == "amba"
            return SimpleNamespace(buckets=[self.buckets[name]] if name in self.buckets else [])

        def create_bucket(**kwargs: Any) -> None:
            self.created.append(kwargs)
            self.buckets[kwargs["bucket_name"]] = Bucket(id="scratch", name=kwargs["bucket_name"], retention_rules=[])

        def delete_bucket(bucket: Bucket) -> None:
            self.deleted.append(bucket.name)
            del self.buckets[bucket.name]

        return SimpleNamespace(find_buckets=find_buckets, create_bucket=create_bucket, delete_bucket=delete_bucket)

    def tasks_api(self) -> Any:
        def find_tasks(name: str, org: str) -> list[Task]:
            return [self.tasks[name]] if name in self.tasks else []

        return SimpleNamespace(find_tasks=find_tasks)

    def close(self) -> None:
        pass


def admin() -> tuple[InfluxAdmin, FakeClient]:
    made = InfluxAdmin(SETTINGS)
    made._client.close()
    fake = FakeClient(made)
    made._client = fake
    return made, fake


def test_a_layout_as_setup_made_it_passes() -> None:
    made, _ = admin()
    checks = made.layout_checks()
    assert [c.name for c in checks] == [f"bucket {b.name}" for b in made.layout.buckets()] + [
        f"task {t.name}" for t in made.layout.tasks()]
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert checks[0].line() == "ok   bucket currently           retention 400 d"  # INFLUXDB_V2_BUCKET: no prefix


def test_a_missing_bucket_a_changed_retention_and_a_failed_task_run_fail() -> None:
    made, fake = admin()
    del fake.buckets["p_numbers"]
    fake.buckets["p_today"].retention_rules = []  # for ever
    fake.tasks["p_task_week"].last_run_status = "failed"
    fake.tasks["p_task_week"].last_run_error = "could not find bucket"
    failed = {c.name: c.detail for c in made.layout_checks() if not c.ok}
    assert failed == {
        "bucket p_numbers": "missing (totals per duration): run `aggregator setup`",
        "bucket p_today": "retention for ever != expected 25 h: run `aggregator setup`",
        "task p_task_week": "last run failed: could not find bucket",
    }


def test_the_scratch_bucket_is_created_with_a_short_retention_and_deleted() -> None:
    made, fake = admin()
    name = "p_selftest-abc"
    made.create_scratch(name)
    assert fake.created == [{"bucket_name": name, "org": "amba",
                             "description": "aggregator selftest: probe events, deleted at its end",
                             "retention_rules": [{"type": "expire", "everySeconds": SCRATCH_RETENTION_S}]}]
    assert made.delete_scratch() == f"bucket {name} deleted"
    assert fake.deleted == [name] and name not in fake.buckets
    assert made.delete_scratch() == "no scratch bucket"


def test_the_probes_store_writes_and_reads_the_scratch_bucket_only() -> None:
    store = InfluxStore.from_settings(SETTINGS.model_copy(update={"influxdb_v2_bucket": "p_selftest-abc"}))
    try:
        assert store.layout.events_bucket == "p_selftest-abc"
        assert store.layout.measurement == SETTINGS.influxdb_measurement
    finally:
        store.close()
