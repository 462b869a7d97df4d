"""The InfluxDB store against stand-ins for the client and for the server's HTTP API.

The error mapping of ``InfluxStore.write`` (a wrong mapping would either drop events,
retry never, or loop on a bad batch, retry for ever), and the requests the real
``influxdb_client`` builds from our calls: setup of amba's buckets and tasks, writes,
queries and the parsing of their annotated CSV.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.exceptions
from influxdb_client.rest import ApiException

from tests.support.sample_points import SECOND, make_point
from worker.core import alignment
from worker.core.durations import DEFAULT_DURATIONS, build_durations
from worker.core.influx_layout import Layout
from worker.store.base import EventStore, StoreRejected, StoreUnavailable
from worker.store.influx import flux
from worker.store.influx.lineprotocol import point_line
from worker.store.influx.store import WRITE_CHUNK_LINES, InfluxStore
from worker.store.influx.tasks import task_flux

pytestmark = pytest.mark.unit

MEASUREMENT = "trending"


def make_layout(retention_days: int = 400, prefix: str = "") -> Layout:
    return Layout.of(measurement=MEASUREMENT, events_bucket="currently", events_retention_days=retention_days,
                     prefix=prefix, durations=build_durations())




# --------------------------------------------------------------------------- write errors


class FakeWriteApi:
    def __init__(self, fail_with: list[BaseException | None] | None = None) -> None:
        self.bodies: list[str] = []
        self.fail_with = list(fail_with or [])

    def write(self, *, bucket: str, org: str, record: str, write_precision: str) -> None:
        assert write_precision == "ns"
        error = self.fail_with.pop(0) if self.fail_with else None
        if error is not None:
            raise error
        self.bodies.append(record)

    def close(self) -> None:
        pass


class FakeClient:
    def __init__(self, write_api: FakeWriteApi) -> None:
        self._write_api = write_api

    def write_api(self, write_options: object) -> FakeWriteApi:
        return self._write_api

    def query_api(self) -> object:
        return object()

    def close(self) -> None:
        pass


def make_store(write_api: FakeWriteApi) -> InfluxStore:
    return InfluxStore(
        "http://influx.invalid:8086",
        "token",
        "amba",
        make_layout(),
        client=FakeClient(write_api),  # type: ignore[arg-type]
    )


def test_the_store_implements_the_port() -> None:
    store = make_store(FakeWriteApi())
    assert isinstance(store, EventStore) and store.name == "influxdb"


def test_write_sends_one_line_per_point_in_chunks() -> None:
    api = FakeWriteApi()
    points = [make_point(event_id=f"e{i}") for i in range(WRITE_CHUNK_LINES + 1)]
    make_store(api).write(points)
    assert [body.count("\n") + 1 for body in api.bodies] == [WRITE_CHUNK_LINES, 1]


@pytest.mark.parametrize("status", [500, 502, 503, 429, 401, 404])
def test_server_errors_and_throttling_are_retryable(status: int) -> None:
    api = FakeWriteApi([ApiException(status=status, reason="nope")])
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}"):
        make_store(api).write([make_point()])


def test_connection_errors_are_retryable() -> None:
    error = urllib3.exceptions.NewConnectionError(None, "connection refused")  # type: ignore[arg-type]
    with pytest.raises(StoreUnavailable, match="unreachable"):
        make_store(FakeWriteApi([error])).write([make_point()])
    with pytest.raises(StoreUnavailable):
        make_store(FakeWriteApi([ConnectionResetError()])).write([make_point()])


@pytest.mark.parametrize("status", [400, 422])
def test_bad_data_is_rejected_not_retried(status: int) -> None:
    api = FakeWriteApi([ApiException(status=status, reason="field type conflict")])
    points = [make_point(event_id="a"), make_point(event_id="b")]
    with pytest.raises(StoreRejected) as caught:
        make_store(api).write(points)
    assert not isinstance(caught.value, StoreUnavailable)
    assert caught.value.rejected == points


def test_an_unrepresentable_point_does_not_hold_back_the_others() -> None:
    api = FakeWriteApi()
    good, bad = make_point(event_id="good"), make_point(event_id="bad", doi="a\nb")
    with pytest.raises(StoreRejected, match="bad: ") as caught:
        make_store(api).write([good, bad])
    assert caught.value.rejected == [bad]
    assert api.bodies == [point_line(good, MEASUREMENT)]


def test_empty_write_sends_nothing() -> None:
    api = FakeWriteApi()
    make_store(api).write([])
    assert api.bodies == []


def test_a_refused_connection_is_retryable() -> None:
    # A real socket: nothing listens on port 1, the client gets ECONNREFUSED at once.
    store = InfluxStore("http://127.0.0.1:1", "token", "amba", make_layout())
    try:
        with pytest.raises(StoreUnavailable, match="unreachable"):
            store.write([make_point()])
        with pytest.raises(StoreUnavailable):
            store.count_per_doi(0, SECOND)
        with pytest.raises(StoreUnavailable):
            store.setup()
    finally:
        store.close()


# --------------------------------------------------------------------------- over HTTP
# A stand-in InfluxDB speaking just enough of the v2 HTTP API, so that the requests the
# real influxdb_client builds from our calls (paths, parameters, bodies) and its parsing
# of annotated CSV are exercised without a server.


class FakeInflux:
    """A stateful fake of the v2 API endpoints the store uses."""

    ORG_ID = "0123456789abcdef"

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, list[str]], bytes]] = []
        self.buckets: dict[str, dict[str, Any]] = {}
        self.tasks: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, list[dict[str, str]]] = {}
        self.csv = ""
        self.fail: tuple[int, dict[str, str]] | None = None

    @staticmethod
    def _options(source: str) -> dict[str, str]:
        """What the server reads from ``option task`` (name, cron, offset) and the flux."""
        options = dict(re.findall(r'^    (name|cron|offset): "?([^",]+)"?,$', source, re.MULTILINE))
        assert {"name", "cron", "offset"} <= set(options), source
        return {**options, "flux": source}

    def handle(self, method: str, url: str, body: bytes) -> tuple[int, str, str]:
        parsed = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parsed.query)
        self.requests.append((method, parsed.path, query, body))
        if self.fail is not None:
            status, payload = self.fail
            return status, "application/json", json.dumps(payload)
        path = parsed.path
        if (method, path) == ("GET", "/api/v2/orgs"):
            orgs = [{"id": self.ORG_ID, "name": "amba"}] if query.get("org") == ["amba"] else []
            if not orgs:
                return 404, "application/json", '{"code":"not found","message":"org not found"}'
            return 200, "application/json", json.dumps({"orgs": orgs})
        if (method, path) == ("GET", "/api/v2/buckets"):
            assert query.get("orgID") == [self.ORG_ID]
            found = [b for b in self.buckets.values() if [b["name"]] == query.get("name")]
            return 200, "application/json", json.dumps({"buckets": found})
        if (method, path) == ("POST", "/api/v2/buckets"):
            request = json.loads(body)
            bucket_id = f"{len(self.buckets) + 1:016x}"
            self.buckets[bucket_id] = {
                "id": bucket_id,
                "name": request["name"],
                "orgID": request["orgID"],
                "retentionRules": request.get("retentionRules") or [],
            }
            return 201, "application/json", json.dumps(self.buckets[bucket_id])
        if method == "PATCH" and path.startswith("/api/v2/buckets/"):
            bucket = self.buckets[path.rsplit("/", 1)[1]]
            bucket["retentionRules"] = json.loads(body)["retentionRules"]
            return 200, "application/json", json.dumps(bucket)
        if (method, path) == ("GET", "/api/v2/tasks"):
            assert query.get("orgID") == [self.ORG_ID]
            found = [t for t in self.tasks.values() if [t["name"]] == query.get("name")]
            return 200, "application/json", json.dumps({"tasks": found})
        if (method, path) == ("POST", "/api/v2/tasks"):
            request = json.loads(body)
            task_id = f"{len(self.tasks) + 1:016x}"
            self.tasks[task_id] = {"id": task_id, "orgID": request["orgID"], "status": request["status"],
                                   "description": request.get("description", ""), **self._options(request["flux"])}
            return 201, "application/json", json.dumps(self.tasks[task_id])
        if method == "GET" and path.startswith("/api/v2/tasks/") and path.endswith("/runs"):
            task_id = path.split("/")[4]
            return 200, "application/json", json.dumps({"runs": self.runs.get(task_id, [])})
        if method == "PATCH" and path.startswith("/api/v2/tasks/"):
            task = self.tasks[path.rsplit("/", 1)[1]]
            update = json.loads(body)
            task.update(self._options(update["flux"]), description=update.get("description", ""))
            return 200, "application/json", json.dumps(task)
        if (method, path) == ("POST", "/api/v2/write"):
            return 204, "text/plain", ""
        if (method, path) == ("POST", "/api/v2/query"):
            return 200, "text/csv; charset=utf-8", self.csv
        return 404, "application/json", '{"code":"not found","message":"no such endpoint"}'


@pytest.fixture
def fake() -> Iterator[tuple[FakeInflux, str]]:
    state = FakeInflux()

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, content_type, text = state.handle(self.command, self.path, body)
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def http_store(url: str, retention_days: int = 400, prefix: str = "") -> InfluxStore:
    return InfluxStore(url, "token", "amba", make_layout(retention_days, prefix))


def annotated_csv(tables: list[tuple[str, list[tuple[str, str]], list[list[object]]]]) -> str:
    """InfluxDB's annotated CSV: one block per (result, columns, rows), table id per row."""
    blocks = []
    for result, columns, rows in tables:
        names = [name for name, _ in columns]
        types = [kind for _, kind in columns]
        lines = [
            "#group,false,false," + ",".join("false" for _ in columns),
            "#datatype,string,long," + ",".join(types),
            f"#default,{result},," + ",".join("" for _ in columns),
            ",result,table," + ",".join(names),
        ]
        lines += [",,0," + ",".join(str(v) for v in row) for row in rows]
        blocks.append("\r\n".join(lines) + "\r\n")
    return "\r\n".join(blocks)


AMBA_BUCKETS = {  # name -> retention in seconds (0 = for ever); layout.py says why
    "currently": 400 * 86_400, "today": 25 * 3600, "week": 7 * 86_400 + 3600, "month": 30 * 86_400 + 3600,
    "year": 365 * 86_400 + 3600, "numbers": 7 * 86_400, "trending_currently": 6 * 3600 + 86_400,
    "trending_today": 2 * 86_400, "trending_week": 8 * 86_400, "trending_month": 31 * 86_400,
    "trending_year": 366 * 86_400,
}
AMBA_TASKS = {  # name -> (cron, offset)
    "task_today": ("2-59/6 * * * *", "50s"), "task_week": ("17 * * * *", "50s"),
    "task_month": ("35 */2 * * *", "50s"), "task_year": ("47 0 * * *", "50s"),
    "task_numbers_currently": ("* * * * *", "2s"), "task_numbers_today": ("10-59/6 * * * *", "50s"),
    "task_numbers_week": ("23 * * * *", "50s"), "task_numbers_month": ("29 */3 * * *", "50s"),
    "task_numbers_year": ("53 4 * * *", "50s"),
}


def retention(bucket: dict[str, Any]) -> int:
    return sum(rule["everySeconds"] for rule in bucket["retentionRules"])


def test_setup_creates_amba_layout_once(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    store = http_store(url)
    store.setup()
    store.setup()
    assert {b["name"]: retention(b) for b in state.buckets.values()} == AMBA_BUCKETS
    assert {t["name"]: (t["cron"], t["offset"]) for t in state.tasks.values()} == AMBA_TASKS
    assert {t["status"] for t in state.tasks.values()} == {"active"}
    changes = [(m, p) for m, p, _, _ in state.requests if m in ("POST", "PATCH")]
    assert len(changes) == len(AMBA_BUCKETS) + len(AMBA_TASKS)  # all from the first setup
    store.close()


def test_setup_takes_over_the_original_aggregators_buckets_and_tasks(fake: tuple[FakeInflux, str]) -> None:
    """An InfluxDB the original aggregator set up: `currently` kept 7 h, its tasks (same
    names) read a cascade of buckets. Setup rewrites them in place and adds what is missing;
    an operator's retention of a trend bucket and a paused task stay as they are."""
    state, url = fake
    state.buckets["b1"] = {"id": "b1", "name": "currently", "orgID": FakeInflux.ORG_ID,
                           "retentionRules": [{"type": "expire", "everySeconds": 7 * 3600}]}
    state.buckets["b2"] = {"id": "b2", "name": "trending_today", "orgID": FakeInflux.ORG_ID, "retentionRules": []}
    old = 'option task = {\n    name: "task_week",\n    cron: "19 * * * *",\n    offset: 15s,\n}\nfrom(bucket: "today")'
    state.tasks["t1"] = {"id": "t1", "orgID": FakeInflux.ORG_ID, "status": "inactive", **FakeInflux._options(old)}
    store = http_store(url)
    store.setup()
    assert retention(state.buckets["b1"]) == 400 * 86_400
    assert retention(state.buckets["b2"]) == 0
    week = state.tasks["t1"]
    assert (week["cron"], week["status"]) == ("17 * * * *", "inactive")
    assert week["flux"] == task_flux(store.layout, next(t for t in store.layout.tasks() if t.name == "task_week"))
    assert sorted(t["name"] for t in state.tasks.values()) == sorted(AMBA_TASKS)
    store.close()


def test_setup_applies_a_changed_retention_and_a_prefix(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    http_store(url, retention_days=400).setup()
    http_store(url, retention_days=500).setup()  # an operator changed the retention
    by_name = {b["name"]: b for b in state.buckets.values()}
    assert retention(by_name["currently"]) == 500 * 86_400
    http_store(url, prefix="shadow_").setup()  # a second copy beside the first
    names = {b["name"] for b in state.buckets.values()}
    assert {f"shadow_{name}" for name in AMBA_BUCKETS if name != "currently"} <= names
    assert {f"shadow_{name}" for name in AMBA_TASKS} <= {t["name"] for t in state.tasks.values()}


def test_task_run_durations(fake: tuple[FakeInflux, str]) -> None:
    from datetime import UTC, datetime

    state, url = fake
    store = http_store(url)
    store.setup()
    task_id = next(t["id"] for t in state.tasks.values() if t["name"] == "task_today")
    state.runs[task_id] = [
        {"id": "r1", "status": "success", "startedAt": "2026-11-23T12:02:40Z", "finishedAt": "2026-11-23T12:02:42.5Z"},
        {"id": "r2", "status": "failed", "startedAt": "2026-11-23T12:06:40Z", "finishedAt": "2026-11-23T12:06:41Z"},
    ]
    got = store.task_run_seconds(datetime(2026, 11, 23, tzinfo=UTC))
    assert got["task_today"] == [2.5]
    assert got["task_numbers_year"] == []
    store.close()


def test_setup_with_an_unknown_org_says_so(fake: tuple[FakeInflux, str]) -> None:
    _, url = fake
    store = InfluxStore(url, "token", "nope", make_layout())
    with pytest.raises(StoreRejected, match="organization 'nope' not found"):
        store.setup()
    store.close()


def test_write_over_http(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    store = http_store(url)
    points = [make_point(event_id="a"), make_point(event_id="b", doi="10.1000/x y")]
    store.write(points)
    ((method, path, query, body),) = state.requests
    assert (method, path) == ("POST", "/api/v2/write")
    assert query == {"org": ["amba"], "bucket": ["currently"], "precision": ["ns"]}
    assert body.decode() == "\n".join(point_line(p, MEASUREMENT) for p in points)

    state.fail = (503, {"code": "unavailable", "message": "shutting down"})
    with pytest.raises(StoreUnavailable, match="HTTP 503: shutting down"):
        store.write(points)
    state.fail = (422, {"code": "unprocessable entity", "message": "field type conflict"})
    with pytest.raises(StoreRejected, match="field type conflict"):
        store.write(points)
    store.close()


def test_trend_inputs_over_http(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    store = http_store(url)
    duration = DEFAULT_DURATIONS[0]
    now = SECOND
    _, stop, _ = alignment.series_range(duration, now)
    width = duration.window_s * 10**9
    series_rows: list[list[object]] = [
        [doi, stop - k * width, value]
        for doi, k, value in [("b", 0, 4.0), ("b", 59, 1.5), ("a", 1, 2.0)]
    ]
    state.csv = annotated_csv(
        [
            ("sums", [("doi", "string"), ("_field", "string"), ("_value", "long")],
             [["b", "count", 3], ["b", "followers", 12]]),
            ("sums", [("doi", "string"), ("_field", "string"), ("_value", "double")],
             [["b", "score", 7.5], ["a", "score", 2.0]]),
            ("decay", [("doi", "string"), ("decayed", "double"), ("age", "double")],
             [["b", 5.25, 100.0]]),
            ("series", [("doi", "string"), ("time_ns", "long"), ("_value", "double")],
             series_rows),
        ]
    )
    got = store.trend_inputs(duration, now, ["a", "b", "c"])
    assert got.count.tolist() == [0.0, 3.0, 0.0]
    assert got.sum_score.tolist() == [2.0, 7.5, 0.0]
    assert got.sum_followers.tolist() == [0.0, 12.0, 0.0]
    assert got.decayed_score.tolist() == [0.0, 5.25, 0.0]
    assert got.sum_age.tolist() == [0.0, 100.0, 0.0]
    assert got.series.shape == (3, duration.windows)
    assert got.series[1, -1] == 4.0 and got.series[1, 0] == 1.5 and got.series[0, -2] == 2.0
    assert got.series.sum() == 7.5
    sent = json.loads(state.requests[0][3])["query"]
    assert sent == flux.trend_inputs_query("currently", duration, now, ["a", "b", "c"], MEASUREMENT)

    assert store.trend_inputs(duration, now, []).series.shape == (0, duration.windows)
    assert len(state.requests) == 1  # an empty chunk asks nothing
    store.close()


def test_qualifying_and_counts_over_http(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    store = http_store(url)
    state.csv = annotated_csv(
        [("_result", [("doi", "string"), ("_value", "long")], [["b", 31], ["a", 40]])]
    )
    assert store.qualifying_dois(DEFAULT_DURATIONS[1], SECOND) == ["a", "b"]
    assert store.count_per_doi(0, SECOND) == {"a": 40, "b": 31}
    store.close()


def test_trend_history_over_http(fake: tuple[FakeInflux, str]) -> None:
    state, url = fake
    store = http_store(url)
    store.write_trend_history("today", SECOND, [{"doi": "a", "score": 1.0, "count": 2, "sum_followers": 7}])
    ((_, path, query, body),) = state.requests
    assert path == "/api/v2/write" and query["bucket"] == ["trending_today"]
    assert body == f"trending,doi=a score=1.0,count=2i,sum_follower=7.0 {SECOND}".encode()
    store.close()
