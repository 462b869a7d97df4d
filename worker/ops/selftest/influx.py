"""The self-test's InfluxDB side: the layout ``setup`` created (read only), and a scratch bucket
``<INFLUXDB_BUCKET_PREFIX>selftest-<random>`` for the probe, written and queried exactly as
the events bucket is, so the buckets amba's streams API reads never see a probe point.
"""

from __future__ import annotations

from typing import Any

from influxdb_client.client.influxdb_client import InfluxDBClient

from worker.config.settings import Settings
from worker.core.influx_layout import Layout
from worker.ops.selftest.compare import Check
from worker.ops.selftest.layout import FoundBucket, FoundTask, bucket_check, task_check
from worker.store.influx.store import layout_from_settings
from worker.store.influx.tasks import task_flux

#: Short, so a killed self-test's points expire within days; long enough for every edge up to
#: `week` and the first window edges of `month` and `year` (their span starts are probed in
#: PostgreSQL only).
SCRATCH_RETENTION_S = 8 * 86_400
#: An hour inside the retention: InfluxDB refuses a point older than it by its own clock.
PROBE_MAX_AGE_S = SCRATCH_RETENTION_S - 3600


class InfluxAdmin:
    """Reads the layout and creates and deletes the scratch bucket."""

    def __init__(self, settings: Settings) -> None:
        self._org = settings.influxdb_v2_org
        self.layout: Layout = layout_from_settings(settings)
        token = settings.influxdb_v2_token.get_secret_value() if settings.influxdb_v2_token else ""
        # influxdb-client's API objects are unannotated (see [tool.mypy] in pyproject.toml): Any.
        self._client: Any = InfluxDBClient(url=str(settings.influxdb_v2_url), token=token, org=self._org,
                                           timeout=settings.influxdb_v2_timeout_ms)
        self._scratch: str | None = None

    def layout_checks(self) -> list[Check]:
        buckets = self._client.buckets_api()
        tasks = self._client.tasks_api()
        checks = []
        for spec in self.layout.buckets():
            found = [FoundBucket(b.name, next((r.every_seconds or 0 for r in b.retention_rules or []
                                               if r.type == "expire"), 0))
                     for b in buckets.find_buckets(name=spec.name, org=self._org).buckets or []]
            checks.append(bucket_check(spec, found))
        for task_spec in self.layout.tasks():
            found_tasks = [FoundTask(t.name, str(t.status), t.cron, t.offset, t.flux or "", t.last_run_status,
                                     t.last_run_error)
                           for t in tasks.find_tasks(name=task_spec.name, org=self._org)]
            checks.append(task_check(task_spec, task_flux(self.layout, task_spec), found_tasks))
        return checks

    def create_scratch(self, name: str) -> None:
        self._scratch = name  # before the request: its answer may be lost after the bucket exists
        self._client.buckets_api().create_bucket(
            bucket_name=name, org=self._org, description="aggregator selftest: probe events, deleted at its end",
            retention_rules=[{"type": "expire", "everySeconds": SCRATCH_RETENTION_S}])

    def delete_scratch(self) -> str:
        """Delete the scratch bucket (and every probe point with it); what was done, in words."""
        if self._scratch is None:
            return "no scratch bucket"
        api = self._client.buckets_api()
        found = api.find_buckets(name=self._scratch, org=self._org).buckets or []
        for bucket in found:
            api.delete_bucket(bucket)
        name, self._scratch = self._scratch, None
        return f"bucket {name} deleted" if found else f"bucket {name} was not created"

    def close(self) -> None:
        self._client.close()
