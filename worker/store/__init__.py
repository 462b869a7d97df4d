"""Event stores behind one port; :func:`open_store` picks the backend from settings."""

from __future__ import annotations

from worker.config.settings import Settings
from worker.store.base import EventStore, StoreRejected, StoreUnavailable

__all__ = ["EventStore", "StoreRejected", "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> EventStore:
    if settings.event_store == "influxdb":
        from worker.store.influx.store import InfluxStore

        return InfluxStore.from_settings(settings)
    from worker.store.postgres.store import PostgresStore

    return PostgresStore.from_settings(settings)
