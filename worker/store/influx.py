"""InfluxDB 2 event store: a thin adapter over ``influxdb_client``.

All Flux text comes from :mod:`worker.store.flux` (pure, checked by the real Flux compiler
in the unit tests); this module only encodes line protocol, sends requests and maps the
answers. No InfluxDB server runs where the tests run, so everything that can be pure is
pure and unit-tested (line protocol, timestamps); the rest is exercised by
``tests/integration/test_influx_live.py`` against a real server.

Point identity and timestamps
-----------------------------
InfluxDB keys a point by (measurement, tag set, timestamp); writing the same key again
overwrites the fields. The only tag is ``doi``, so the timestamp carries the identity:

    timestamp = event second (floored) + blake2b(event id) mod 1e9  [ns]

* a redelivered event (same id) maps to the same timestamp: rewriting it changes nothing;
* two distinct events on one DOI in the same second get different offsets, except with
  probability 1e-9 per pair (``n·(n−1)/2 · 1e-9`` for ``n`` events of one DOI in one
  second: even 100 such events collide with probability 5e-6);
* the event keeps its second; its sub-second part is replaced by the hash offset (the
  upstream timestamps carry seconds; the trend math is insensitive to < 1 s).

blake2b rather than ``hash()``: the offset must be the same in every worker process and
after restarts (``hash()`` of a str is salted per process).

InfluxDB does not store the event id (the stored fields are SPEC §2's list), so
:meth:`InfluxStore.read_events` returns the point identity instead:
``event_id = "influxdb:<doi>@<timestamp ns>"``, and ``time_ns`` is the stored timestamp.

Errors
------
:class:`~worker.store.base.StoreUnavailable` (the Celery task retries with backoff):
connection errors, timeouts, HTTP 5xx, 429 (throttled), 408, and 401/403/404 (a token,
org or bucket problem an operator fixes; the events must wait, not be dropped).
:class:`StoreRejected` (retrying the same request cannot succeed): HTTP 400/413/422
(malformed line, field type conflict, points outside the retention period) and points whose
DOI line protocol cannot represent. A write sends every representable chunk first and
raises at the end with the refused points, so one bad event does not hold back the others.
"""

from __future__ import annotations

import hashlib
import logging
import math
import numbers
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect
import numpy as np
import urllib3.exceptions
from influxdb_client import BucketRetentionRules, InfluxDBClient, WritePrecision
from influxdb_client.client.exceptions import InfluxDBError
from influxdb_client.client.flux_csv_parser import FluxQueryException
from influxdb_client.client.flux_table import FluxRecord
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.patch_retention_rule import PatchRetentionRule
from influxdb_client.domain.task_create_request import TaskCreateRequest
from influxdb_client.domain.task_update_request import TaskUpdateRequest
from influxdb_client.rest import ApiException

from worker.durations import Duration
from worker.events import POINT_FIELDS, Point
from worker.store import alignment, flux
from worker.store.base import Aggregates, StoreRejected, StoreUnavailable

if TYPE_CHECKING:
    from worker.settings import Settings

log = logging.getLogger(__name__)

MEASUREMENT = flux.MEASUREMENT
TREND_MEASUREMENT = "trend"
#: Lines per write request (InfluxDB's guidance is batches of about 5000 lines).
WRITE_CHUNK_LINES = 5000

_NS_PER_S = 1_000_000_000
_DAY_S = 86_400
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

# 4xx answers that mean "this request is wrong" (see the module docstring).
_REJECTED_STATUSES = frozenset({400, 413, 422})

# Which stored fields are integers: from the Point definition, so a new field cannot be
# written with the wrong type (a float written to an integer field is refused, 422).
# (type_info, not `is int`: the integer fields carry range constraints, Annotated[int, Meta].)
_INT_FIELDS = frozenset(
    f.name for f in msgspec.structs.fields(Point)
    if f.name in POINT_FIELDS and isinstance(msgspec.inspect.type_info(f.type), msgspec.inspect.IntType)
)


class UnrepresentableValue(ValueError):
    """A tag or field value that line protocol cannot carry faithfully."""


# --------------------------------------------------------------------------- line protocol


def event_timestamp_ns(point: Point) -> int:
    """The stored timestamp: the event's second plus a stable per-event offset (< 1 s)."""
    digest = hashlib.blake2b(point.event_id.encode("utf-8"), digest_size=8).digest()
    offset = int.from_bytes(digest, "big") % _NS_PER_S
    return point.time_ns - point.time_ns % _NS_PER_S + offset


def escape_tag_value(value: str) -> str:
    """Escape a tag value (or tag/field key): ``,``, ``=`` and space get a backslash.

    InfluxDB 2's parser unescapes only ``\\,``, ``\\=`` and ``\\ `` in tags; a backslash
    elsewhere is a literal. A value whose backslash precedes one of those characters, a
    backslash or the end (where the following separator would become an escaped space)
    has no unambiguous encoding, nor has a newline: such values are refused.
    """
    if not value:
        raise UnrepresentableValue("empty tag value")
    if "\n" in value or "\r" in value:
        raise UnrepresentableValue(f"tag value {value!r} contains a line break")
    if value.endswith("\\") or any(
        value[i] == "\\" and value[i + 1] in "\\,= " for i in range(len(value) - 1)
    ):
        raise UnrepresentableValue(f"tag value {value!r} has a backslash line protocol eats")
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _float_value(name: str, value: float) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise UnrepresentableValue(f"field {name} is {number!r}; InfluxDB stores finite floats")
    return repr(number)


def _int_value(name: str, value: int) -> str:
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise UnrepresentableValue(f"field {name} = {number} does not fit an int64")
    return f"{number}i"


def _string_value(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise UnrepresentableValue(f"field {name} contains a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def point_line(point: Point) -> str:
    """One event as line protocol: ``discussion,doi=… <12 fields>,count=1i <timestamp>``.

    Integer fields get the ``i`` suffix and floats are always written as floats (``42.0``,
    never ``42``), whatever Python type the value has: InfluxDB fixes a field's type with
    its first write and refuses the other type afterwards.
    """
    fields = []
    for name in POINT_FIELDS:
        value = getattr(point, name)
        if name in _INT_FIELDS:
            fields.append(f"{name}={_int_value(name, value)}")
        else:
            fields.append(f"{name}={_float_value(name, value)}")
    fields.append(f"{flux.COUNT_FIELD}=1i")
    return (
        f"{MEASUREMENT},doi={escape_tag_value(point.doi)} "
        f"{','.join(fields)} {event_timestamp_ns(point)}"
    )


def trend_lines(
    duration_name: str, calculated_at_ns: int, rows: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Trend rows as line protocol: measurement ``trend``, tags ``doi`` and ``duration``.

    Every row of one run gets the run's time, so a run is one timestamp per (doi,
    duration) series and rewriting a run overwrites it. Numbers become int/float fields,
    strings string fields (``mk_trend``), booleans booleans; ``None`` and NaN are left out
    (InfluxDB has no null and refuses NaN); a row with no field left is skipped.
    """
    duration_tag = escape_tag_value(duration_name)
    lines = []
    for row in rows:
        doi = row.get("doi", row.get("publication_doi"))
        if not isinstance(doi, str):
            raise UnrepresentableValue(f"trend row without a doi: {row!r}")
        fields = []
        for key, value in row.items():
            if key in ("doi", "publication_doi", "duration") or value is None:
                continue
            name = escape_tag_value(key)
            if isinstance(value, bool | np.bool_):
                fields.append(f"{name}={'true' if value else 'false'}")
            elif isinstance(value, numbers.Integral):
                fields.append(f"{name}={_int_value(key, int(value))}")
            elif isinstance(value, numbers.Real):
                if math.isfinite(float(value)):
                    fields.append(f"{name}={_float_value(key, float(value))}")
            elif isinstance(value, str):
                fields.append(f"{name}={_string_value(key, value)}")
            else:
                raise UnrepresentableValue(f"trend field {key} has type {type(value).__name__}")
        if fields:
            lines.append(
                f"{TREND_MEASUREMENT},doi={escape_tag_value(doi)},duration={duration_tag} "
                f"{','.join(fields)} {int(calculated_at_ns)}"
            )
    return lines


# --------------------------------------------------------------------------- errors


def _describe(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:500]


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Map client errors to the port's exceptions (see the module docstring)."""
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
    except FluxQueryException as error:
        # An error reported inside the result stream: the query compiled (our texts are
        # compiler-checked), so it is a runtime failure on the server (memory, timeout).
        raise StoreUnavailable(f"InfluxDB {action}: query failed: {_describe(error)}") from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise StoreUnavailable(f"InfluxDB {action}: unreachable: {_describe(error)}") from error


# --------------------------------------------------------------------------- the store


class InfluxStore:
    """Event store on InfluxDB 2 (the production backend of SPEC §1)."""

    name = "influxdb"

    def __init__(
        self,
        url: str,
        token: str | None,
        org: str,
        bucket: str,
        trend_bucket: str,
        retention_days: int = 400,
        timeout_ms: int = 30_000,
        *,
        client: InfluxDBClient | None = None,
    ) -> None:
        self._org = org
        self._bucket = bucket
        self._trend_bucket = trend_bucket
        self._retention_days = retention_days
        # No connection is opened here: the client connects on the first request.
        self._client = client or InfluxDBClient(url=url, token=token, org=org, timeout=timeout_ms)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._query_api = self._client.query_api()

    @classmethod
    def from_settings(cls, settings: Settings) -> InfluxStore:
        if not settings.influxdb_v2_url:
            raise ValueError("EVENT_STORE=influxdb needs INFLUXDB_V2_URL")
        return cls(
            url=settings.influxdb_v2_url,
            token=settings.influxdb_v2_token,
            org=settings.influxdb_v2_org,
            bucket=settings.influxdb_v2_bucket,
            trend_bucket=settings.influxdb_v2_trend_bucket,
            retention_days=settings.influxdb_v2_retention_days,
            timeout_ms=settings.influxdb_v2_timeout_ms,
        )

    @property
    def downsample_bucket(self) -> str:
        return flux.downsample_bucket(self._bucket)

    # -- setup --------------------------------------------------------------------------

    def setup(self) -> None:
        """Buckets and the downsampling task, each looked up by name first (idempotent).

        The events bucket's retention follows ``INFLUXDB_V2_RETENTION_DAYS`` (0 = for ever)
        and is corrected when an operator changes the setting; ``<bucket>_1h`` and the trend
        bucket are created without expiry and otherwise left as an operator configured them.
        The task's Flux is updated when it differs from this version's; its status
        (an operator may have paused it) is left alone.
        """
        with _translated("setup"):
            org_id = self._org_id()
            self._ensure_bucket(org_id, self._bucket, self._retention_days * _DAY_S, enforce=True)
            self._ensure_bucket(org_id, self.downsample_bucket, 0, enforce=False)
            self._ensure_bucket(org_id, self._trend_bucket, 0, enforce=False)
            self._ensure_task(org_id)

    def _org_id(self) -> str:
        try:
            orgs = self._client.organizations_api().find_organizations(org=self._org)
        except ApiException as error:
            if error.status != 404:
                raise
            orgs = []
        if not orgs:
            raise StoreRejected(
                f"InfluxDB organization {self._org!r} not found (INFLUXDB_V2_ORG), "
                "or the token may not read it"
            )
        return str(orgs[0].id)

    def _ensure_bucket(self, org_id: str, name: str, retention_s: int, *, enforce: bool) -> None:
        api = self._client.buckets_api()
        found = api.find_buckets(name=name, org_id=org_id).buckets or []
        if not found:
            rules = [BucketRetentionRules(type="expire", every_seconds=retention_s)]
            api.create_bucket(bucket_name=name, retention_rules=rules if retention_s else [], org=org_id)
            log.info("influxdb: created bucket %s (retention %ss, 0 = for ever)", name, retention_s)
            return
        bucket = found[0]
        current = [r.every_seconds or 0 for r in bucket.retention_rules or [] if r.type == "expire"]
        if enforce and (current[0] if current else 0) != retention_s:
            bucket.retention_rules = [PatchRetentionRule(type="expire", every_seconds=retention_s)]
            api.update_bucket(bucket)
            log.info("influxdb: bucket %s retention set to %ss (0 = for ever)", name, retention_s)

    def _ensure_task(self, org_id: str) -> None:
        api = self._client.tasks_api()
        name = flux.downsample_task_name(self._bucket)
        source = flux.downsample_task(self._bucket, self.downsample_bucket)
        found = api.find_tasks(name=name, org_id=org_id)
        if not found:
            request = TaskCreateRequest(
                org_id=org_id,
                flux=source,
                status="active",
                description="hourly count and score per DOI, for long-term dashboards",
            )
            api.create_task(task_create_request=request)
            log.info("influxdb: created task %s", name)
        elif found[0].flux != source:
            api.update_task_request(found[0].id, TaskUpdateRequest(flux=source))
            log.info("influxdb: updated the Flux of task %s", name)

    # -- writes -------------------------------------------------------------------------

    def write(self, points: Sequence[Point]) -> None:
        """Write the events; representable chunks first, then :class:`StoreRejected`."""
        refused: list[Point] = []
        reasons: list[str] = []
        lines: list[str] = []
        written: list[Point] = []
        for point in points:
            try:
                lines.append(point_line(point))
                written.append(point)
            except UnrepresentableValue as error:
                refused.append(point)
                reasons.append(f"{point.event_id}: {error}")
        for start in range(0, len(lines), WRITE_CHUNK_LINES):
            chunk = slice(start, start + WRITE_CHUNK_LINES)
            try:
                self._write_lines(self._bucket, lines[chunk])
            except StoreRejected as error:
                refused.extend(written[chunk])
                reasons.append(str(error))
        if refused:
            raise StoreRejected(
                f"{len(refused)} of {len(points)} points refused: " + "; ".join(reasons[:5]),
                refused,
            )

    def _write_lines(self, bucket: str, lines: list[str]) -> None:
        if not lines:
            return
        with _translated(f"write to {bucket}"):
            self._write_api.write(
                bucket=bucket,
                org=self._org,
                record="\n".join(lines),
                write_precision=WritePrecision.NS,
            )

    def write_trend_history(
        self, duration_name: str, calculated_at_ns: int, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """Keep every run's rows in the trend bucket (measurement ``trend``)."""
        try:
            lines = trend_lines(duration_name, calculated_at_ns, rows)
        except UnrepresentableValue as error:
            raise StoreRejected(f"trend history: {error}") from error
        for start in range(0, len(lines), WRITE_CHUNK_LINES):
            self._write_lines(self._trend_bucket, lines[start : start + WRITE_CHUNK_LINES])

    # -- reads --------------------------------------------------------------------------

    def _query(self, source: str, action: str) -> list[FluxRecord]:
        with _translated(action):
            return list(self._query_api.query_stream(source, org=self._org))

    def read_events(self, doi: str, start_ns: int, stop_ns: int) -> list[Point]:
        if stop_ns <= start_ns:
            return []
        records = self._query(
            flux.read_events_query(self._bucket, doi, start_ns, stop_ns), "read events"
        )
        points = []
        for record in records:
            values = record.values
            time_ns = int(values[flux.TIME_NS_COLUMN])
            fields: dict[str, Any] = {}
            for name in POINT_FIELDS:
                raw = values.get(name)
                if name in _INT_FIELDS:
                    fields[name] = int(raw) if raw is not None else 0
                else:
                    fields[name] = float(raw) if raw is not None else 0.0
            stored_doi = str(values.get("doi", doi))
            points.append(
                Point(
                    event_id=f"influxdb:{stored_doi}@{time_ns}",
                    doi=stored_doi,
                    time_ns=time_ns,
                    **fields,
                )
            )
        points.sort(key=lambda p: p.time_ns)
        return points

    def count_per_doi(self, start_ns: int, stop_ns: int) -> dict[str, int]:
        if stop_ns <= start_ns:
            return {}
        records = self._query(flux.count_per_doi_query(self._bucket, start_ns, stop_ns), "count")
        counts: dict[str, int] = defaultdict(int)
        for record in records:
            counts[str(record.values["doi"])] += int(record.values["_value"])
        return dict(counts)

    # -- trends -------------------------------------------------------------------------

    def qualifying_dois(self, duration: Duration, now_ns: int) -> list[str]:
        """DOIs with more than ``min_events`` events in ``[now − span, now]``, sorted."""
        records = self._query(
            flux.qualifying_dois_query(self._bucket, duration, now_ns), "qualifying DOIs"
        )
        return sorted({str(record.values["doi"]) for record in records})

    def trend_inputs(self, duration: Duration, now_ns: int, dois: Sequence[str]) -> Aggregates:
        """Per-DOI sums, decayed score, sum of ages and window series, in ``dois`` order.

        A DOI without events in the span gets zeros (and an all-zero series).
        """
        index = {doi: i for i, doi in enumerate(dois)}
        if len(index) != len(dois):
            raise ValueError("trend_inputs: duplicate DOIs in the chunk")
        n, windows = len(dois), duration.windows
        sums = {name: np.zeros(n) for name in (*flux.SUM_FIELDS.values(), "decayed_score", "sum_age")}
        series = np.zeros((n, windows))
        if n:
            source = flux.trend_inputs_query(self._bucket, duration, now_ns, list(dois))
            records = self._query(source, f"trend inputs ({duration.name})")
            _fill_trend_inputs(records, index, duration, now_ns, sums, series)
        return Aggregates(series=series, **sums)

    def close(self) -> None:
        with _translated("close"):
            self._write_api.close()
            self._client.close()


def _fill_trend_inputs(
    records: list[FluxRecord],
    index: Mapping[str, int],
    duration: Duration,
    now_ns: int,
    sums: dict[str, np.ndarray],
    series: np.ndarray,
) -> None:
    """Place the three results of :func:`flux.trend_inputs_query` into the arrays."""
    _, stop, _ = alignment.series_range(duration, now_ns)
    width = duration.window_s * _NS_PER_S
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
            back = round((stop - int(values[flux.TIME_NS_COLUMN])) / width)
            column = windows - 1 - back
            if 0 <= column < windows:
                series[row, column] += float(values.get("_value") or 0.0)
