"""The InfluxDB 2 event store in amba's layout: a thin adapter over the pure line protocol,
Flux queries and tasks. Client errors become the port's: HTTP 400, 413 and 422 say the
request is wrong (:class:`StoreRejected`), anything else that the store is unavailable."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import urllib3.exceptions
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxQueryException
from influxdb_client.client.flux_table import FluxRecord
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules
from influxdb_client.domain.patch_retention_rule import PatchRetentionRule
from influxdb_client.domain.task_create_request import TaskCreateRequest
from influxdb_client.domain.task_update_request import TaskUpdateRequest
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from worker.core import alignment
from worker.core.aggregates import Aggregates, TrendRow
from worker.core.durations import Duration, build_durations
from worker.core.events import Point
from worker.core.influx_layout import BucketSpec, Layout, TaskSpec
from worker.store.base import StoreRejected, StoreUnavailable
from worker.store.influx import flux
from worker.store.influx.lineprotocol import UnrepresentableValue, point_line, trend_lines
from worker.store.influx.tasks import task_flux

if TYPE_CHECKING:
    from worker.config.settings import Settings

log = logging.getLogger(__name__)

#: Lines per write request (InfluxDB's guidance is batches of about 5000 lines).
WRITE_CHUNK_LINES = 5000

_REJECTED_STATUSES = frozenset({400, 413, 422})


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:500]


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except ApiException as error:
        status = error.status or 0
        text = f"InfluxDB {action}: HTTP {status}: {_describe(error)}"
        if status in _REJECTED_STATUSES:
            raise StoreRejected(text) from error
        raise StoreUnavailable(text) from error
    except InfluxDBError as error:  # a client-side failure without an HTTP status
        raise StoreUnavailable(f"InfluxDB {action}: {_describe(error)}") from error
    except FluxQueryException as error:  # in the result stream: a server failure (memory, timeout)
        raise StoreUnavailable(f"InfluxDB {action}: query failed: {_describe(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise StoreUnavailable(f"InfluxDB {action}: unreachable: {_describe(error)}") from error


class InfluxStore:
    """Event store on InfluxDB 2 (the production backend of SPEC §1), in amba's layout."""

    name = "influxdb"
    keeps_trend_history = True  # the trending_<duration> buckets the streams API charts

    def __init__(self, url: str, token: str, org: str, layout: Layout, timeout_ms: int = 30_000, *,
                 client: InfluxDBClient | None = None) -> None:
        self._org = org
        self.layout = layout
        self._client = client or InfluxDBClient(url=url, token=token or "", org=org, timeout=timeout_ms)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()

    @classmethod
    def from_settings(cls, settings: Settings) -> InfluxStore:
        if not settings.influxdb_v2_url or settings.influxdb_v2_token is None:
            raise ValueError("EVENT_STORE=influxdb needs INFLUXDB_V2_URL and INFLUXDB_V2_TOKEN")
        return cls(settings.influxdb_v2_url, settings.influxdb_v2_token.get_secret_value(),
                   settings.influxdb_v2_org, layout_from_settings(settings), settings.influxdb_v2_timeout_ms)

    def setup(self) -> None:
        """The layout's buckets and tasks, created or updated in place (idempotent)."""
        with _translated("setup"):
            org_id = self._org_id()
            for bucket in self.layout.buckets():
                self._ensure_bucket(org_id, bucket)
            for task in self.layout.tasks():
                self._ensure_task(org_id, task)

    def _org_id(self) -> str:
        try:
            orgs = self._client.organizations_api().find_organizations(org=self._org)
        except ApiException as error:
            if error.status != 404:
                raise
            orgs = []
        if not orgs:
            raise StoreRejected(f"InfluxDB organization {self._org!r} not found (INFLUXDB_V2_ORG), "
                                "or the token may not read it")
        return str(orgs[0].id)

    def _ensure_bucket(self, org_id: str, spec: BucketSpec) -> None:
        api = self._client.buckets_api()
        found = api.find_buckets(name=spec.name, org_id=org_id).buckets or []
        if not found:
            rules = [BucketRetentionRules(type="expire", every_seconds=spec.retention_s)]
            api.create_bucket(bucket_name=spec.name, retention_rules=rules if spec.retention_s else [],
                              description=f"{spec.holds} (aggregator setup)", org=org_id)
            log.info("influxdb: created bucket %s (retention %ss, 0 = for ever)", spec.name, spec.retention_s)
            return
        bucket = found[0]
        current = [r.every_seconds or 0 for r in bucket.retention_rules or [] if r.type == "expire"]
        if spec.enforce_retention and (current[0] if current else 0) != spec.retention_s:
            bucket.retention_rules = [PatchRetentionRule(type="expire", every_seconds=spec.retention_s)]
            api.update_bucket(bucket)
            log.info("influxdb: bucket %s retention set to %ss (0 = for ever)", spec.name, spec.retention_s)
        else:
            log.info("influxdb: bucket %s unchanged", spec.name)

    def _ensure_task(self, org_id: str, spec: TaskSpec) -> None:
        api = self._client.tasks_api()
        source = task_flux(self.layout, spec)
        found = api.find_tasks(name=spec.name, org_id=org_id)
        if not found:
            request = TaskCreateRequest(org_id=org_id, flux=source, status="active", description=spec.description)
            api.create_task(task_create_request=request)
            log.info("influxdb: created task %s (%s, +%ss)", spec.name, spec.cron, spec.offset_s)
            return
        if len(found) > 1:
            log.warning("influxdb: %d tasks named %s; all are updated", len(found), spec.name)
        for task in found:
            if task.flux != source:
                api.update_task_request(task.id, TaskUpdateRequest(flux=source, description=spec.description))
                log.info("influxdb: updated task %s (%s, +%ss)", spec.name, spec.cron, spec.offset_s)
            else:
                log.info("influxdb: task %s unchanged", spec.name)

    def task_run_seconds(self, since: datetime, limit: int = 500) -> dict[str, list[float]]:
        """How long the layout's tasks ran (successful runs scheduled after ``since``), by
        task name: ``aggregator schedule`` draws the day with them."""
        durations: dict[str, list[float]] = {}
        with _translated("task runs"):
            org_id = self._org_id()
            api = self._client.tasks_api()
            for spec in self.layout.tasks():
                for task in api.find_tasks(name=spec.name, org_id=org_id):
                    runs = api.get_runs(task.id, after_time=since, limit=limit)
                    durations.setdefault(spec.name, []).extend(
                        (run.finished_at - run.started_at).total_seconds()
                        for run in runs
                        if run.status == "success" and run.started_at and run.finished_at
                    )
        return durations

    def write(self, points: Sequence[Point]) -> None:
        """Write the events; representable chunks first, then :class:`StoreRejected`."""
        refused: list[Point] = []
        reasons: list[str] = []
        lines: list[str] = []
        written: list[Point] = []
        for point in points:
            try:
                lines.append(point_line(point, self.layout.measurement))
                written.append(point)
            except UnrepresentableValue as error:
                refused.append(point)
                reasons.append(f"{point.event_id}: {error}")
        for start in range(0, len(lines), WRITE_CHUNK_LINES):
            chunk = slice(start, start + WRITE_CHUNK_LINES)
            try:
                self._write_lines(self.layout.events_bucket, lines[chunk])
            except StoreRejected as error:
                refused.extend(written[chunk])
                reasons.append(str(error))
        if refused:
            raise StoreRejected(
                f"{len(refused)} of {len(points)} points refused: " + "; ".join(reasons[:5]),
                refused,
            )

    def _write_lines(self, bucket: str, lines: list[str]) -> None:
        with _translated(f"write to {bucket}"):
            self._write_api.write(
                bucket=bucket,
                org=self._org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # the stub types it str
            )

    def write_trend_history(self, duration: str, calculated_at_ns: int, rows: Sequence[TrendRow]) -> None:
        """A run's rows into ``trending_<duration>``, the bucket the streams API charts."""
        try:
            lines = trend_lines(self.layout.measurement, calculated_at_ns, rows)
        except UnrepresentableValue as error:
            raise StoreRejected(f"trend history: {error}") from error
        bucket = self.layout.trend_bucket(duration)
        for start in range(0, len(lines), WRITE_CHUNK_LINES):
            self._write_lines(bucket, lines[start : start + WRITE_CHUNK_LINES])

    def _query(self, source: str, action: str) -> list[FluxRecord]:
        with _translated(action):
            return list(self._query_api.query_stream(source, org=self._org))

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        if stop_ns <= start_ns:
            return {}
        source = flux.count_per_doi_query(self.layout.events_bucket, start_ns, stop_ns, self.layout.measurement)
        counts: dict[str, int] = defaultdict(int)
        for record in self._query(source, "count"):
            counts[str(record.values["doi"])] += int(record.values["_value"])
        return dict(counts)

    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        """DOIs with more than ``min_events`` events in the span, sorted."""
        source = flux.qualifying_dois_query(self.layout.events_bucket, duration, now_ns, self.layout.measurement)
        return sorted({str(record.values["doi"]) for record in self._query(source, "qualifying DOIs")})

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        index = {doi: i for i, doi in enumerate(dois)}
        if len(index) != len(dois):
            raise ValueError("trend_inputs: duplicate DOIs in the chunk")
        alignment.check_now(now_ns)
        n, windows = len(dois), duration.windows
        sums = {name: np.zeros(n) for name in (*flux.SUM_FIELDS.values(), "decayed_score", "sum_age")}
        series = np.zeros((n, windows))
        if n:
            source = flux.trend_inputs_query(self.layout.events_bucket, duration, now_ns, list(dois),
                                             self.layout.measurement)
            records = self._query(source, f"trend inputs ({duration.name})")
            _fill_trend_inputs(records, index, duration, now_ns, sums, series)
        return Aggregates(series=series, **sums)

    def close(self) -> None:
        with _translated("close"):
            self._write_api.close()
            self._client.close()


def layout_from_settings(settings: Settings) -> Layout:
    """The layout of this deployment: amba's names unless configured otherwise."""
    return Layout.of(
        measurement=settings.influxdb_measurement,
        events_bucket=settings.influxdb_v2_bucket,
        events_retention_days=settings.influxdb_v2_retention_days,
        prefix=settings.influxdb_bucket_prefix,
        durations=build_durations(settings.trend_durations),
    )


def _fill_trend_inputs(records: list[FluxRecord], index: Mapping[str, int], duration: Duration, now_ns: int,
                       sums: dict[str, np.ndarray], series: np.ndarray) -> None:
    """Place the three results of :func:`flux.trend_inputs_query` into the arrays."""
    _, stop, _ = alignment.series_range(duration, now_ns)
    width = duration.window_s * alignment.NS_PER_S
    windows = duration.windows
    for record in records:
        values = record.values
        row = index.get(str(values.get("doi")))
        if row is None:
            continue
        result = values.get("result")
        if result == flux.RESULT_SUMS:
            name = flux.SUM_FIELDS.get(str(values.get("_field")))
            if name is not None and values.get("_value") is not None:
                sums[name][row] += float(values["_value"])
        elif result == flux.RESULT_DECAY:
            sums["decayed_score"][row] += float(values.get("decayed") or 0.0)
            sums["sum_age"][row] += float(values.get("age") or 0.0)
        elif result == flux.RESULT_SERIES:
            # time_ns is a window's stop; the last window stops at `stop`.
            column = windows - 1 - round((stop - int(values[flux.TIME_NS_COLUMN])) / width)
            if 0 <= column < windows:
                series[row, column] += float(values.get("_value") or 0.0)
