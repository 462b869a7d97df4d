"""A real InfluxDB 2 for the live tests, when ``INFLUXDB_V2_URL`` (and ``_TOKEN``, ``_ORG``) is set.

None runs where the tests usually run (Debian ships only InfluxDB 1.x, and there is no
Docker); with a server, e.g.::

    docker run -d -p 8086:8086 -e DOCKER_INFLUXDB_INIT_MODE=setup \\
        -e DOCKER_INFLUXDB_INIT_USERNAME=admin -e DOCKER_INFLUXDB_INIT_PASSWORD=adminadmin \\
        -e DOCKER_INFLUXDB_INIT_ORG=amba -e DOCKER_INFLUXDB_INIT_BUCKET=init \\
        -e DOCKER_INFLUXDB_INIT_ADMIN_TOKEN=dev-token influxdb:2.7.11
    INFLUXDB_V2_URL=http://127.0.0.1:8086 INFLUXDB_V2_TOKEN=dev-token INFLUXDB_V2_ORG=amba \\
        python -m pytest -m "contract or influx_live"

Every store gets its own layout (a random ``INFLUXDB_BUCKET_PREFIX``, its raw bucket
``<prefix>currently``) and its buckets and tasks are deleted afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from influxdb_client.client.influxdb_client import InfluxDBClient

from worker.config.settings import Settings
from worker.store.influx.store import InfluxStore

_NO_SERVER = "INFLUXDB_V2_URL not set: no InfluxDB 2 on this machine"
needs_influx = pytest.mark.skipif(not os.environ.get("INFLUXDB_V2_URL"), reason=_NO_SERVER)


def require_server() -> None:
    """Skip the calling test where no server runs (before any settings need its URL)."""
    if not os.environ.get("INFLUXDB_V2_URL"):
        pytest.skip(_NO_SERVER)


def live_settings(retention_days: int = 0) -> Settings:
    """Settings of a layout of its own; retention 0 keeps points of any age (fixed test times)."""
    prefix = f"it{uuid.uuid4().hex[:8]}_"
    return Settings(event_store="influxdb", influxdb_v2_bucket=f"{prefix}currently", influxdb_bucket_prefix=prefix,
                    influxdb_v2_retention_days=retention_days)


def admin_client(settings: Settings) -> InfluxDBClient:
    return InfluxDBClient(url=str(settings.influxdb_v2_url),
                          token=settings.influxdb_v2_token.get_secret_value() if settings.influxdb_v2_token else "",
                          org=settings.influxdb_v2_org, timeout=settings.influxdb_v2_timeout_ms)


def remove_layout(store: InfluxStore, client: InfluxDBClient) -> None:
    buckets = client.buckets_api()
    for spec in store.layout.buckets():
        for bucket in buckets.find_buckets(name=spec.name).buckets or []:
            buckets.delete_bucket(bucket)
    tasks = client.tasks_api()
    for task_spec in store.layout.tasks():
        for task in tasks.find_tasks(name=task_spec.name):
            tasks.delete_task(task.id)


@contextmanager
def live_store(settings: Settings | None = None) -> Iterator[InfluxStore]:
    """A set-up store on the live server (skips the test without one); removed afterwards."""
    require_server()
    settings = settings or live_settings()
    store = InfluxStore.from_settings(settings)
    client = admin_client(settings)
    try:
        store.setup()
        yield store
    finally:
        remove_layout(store, client)
        client.close()
        store.close()
