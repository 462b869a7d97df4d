"""`aggregator health <component>`: exit 0 when the component's dependencies answer.

Used as the container healthcheck of every product service in docker-compose.yml, so it
must be fast and must never hang: every check has a ~3 s timeout and the checks run
concurrently, so a dead dependency costs one timeout, not the sum of them. One line per
check goes to stdout (``docker inspect`` keeps it in the health log), e.g.::

    ok   redis     redis://redis:6379/0 (1.2 ms)
    FAIL postgres  postgresql://aggregator:***@postgres:5432/aggregator: connection refused

What each component needs (a check only for what the process really talks to, so an
InfluxDB outage does not mark the bridge unhealthy):

- ``bridge``: Redis (the ingest queue), Kafka metadata (the topic it consumes), its own
  metrics endpoint when ``BRIDGE_METRICS_PORT`` is set (proves the process itself answers),
  and the dead-letter guard: it fails while the group's stop record exists (the bridges
  have stopped consuming because the stream turned invalid; an operator must look).
- ``worker``: Redis, PostgreSQL, InfluxDB when ``EVENT_STORE=influxdb``, Kafka (dead
  letters), and a Celery ``ping`` of the worker node(s) running on this host: a worker whose
  main process is wedged stops answering pings while its dependencies still look fine.
- ``beat``: Redis (beat only publishes).
- ``setup``: PostgreSQL, Kafka, InfluxDB when configured (what `aggregator setup` writes to).

And what the product delivers, beyond its dependencies answering:

- ``trends``: per duration, the age of its last finalized run against its bound
  (:mod:`worker.trends.freshness`: two periods plus what one run may take), and the queue
  depths (the ingest queue must stay below twice ``BRIDGE_QUEUE_HIGH_WATERMARK``: the
  bridges pause at the watermark), and Redis's memory: it fails from 90% of ``maxmemory``
  (the bridges pause at ``BRIDGE_REDIS_MEMORY_HIGH_WATERMARK``, so Redis fills although they
  hold back). Compose's trends worker and beat run it beside their own checks.
- ``lag``: the consumer group's lag on ``KAFKA_TOPIC`` (events not yet stored) against
  ``HEALTH_MAX_INGEST_LAG``; the bridge's healthcheck runs it.
- ``exporter``: ``aggregator exporter`` answers on ``EXPORTER_PORT``. (A worker with
  ``WORKER_METRICS_PORT`` set has its endpoint checked with the ``worker`` component.)
- ``alerts``: every receiver of the Alertmanager at ``ALERTMANAGER_URL`` delivers somewhere,
  read from its running configuration. Only ever a ``warn``: the product works without
  alerting, but no one would hear it break. Compose's exporter runs it beside its own check.

Several components can be checked at once: ``aggregator health worker trends``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from worker.celeryapp.liveness import unacked_keys
from worker.celeryapp.resources import redis_client
from worker.config.settings import Settings
from worker.core import names
from worker.core.durations import Duration
from worker.core.masking import mask_dsn, scrub
from worker.db.connection import Database
from worker.ingest.bridge.depth import priority_keys
from worker.ingest.bridge.guard_state import RedisGuardRecords
from worker.ingest.kafka_config import client_config, group_lag
from worker.ingest.redis_memory import NEAR_FULL, describe, read_memory
from worker.trends.freshness import Freshness, stale_after

if TYPE_CHECKING:
    import redis

TIMEOUT_S = 3.0
#: The components `aggregator health` knows.
COMPONENTS = ("bridge", "worker", "beat", "setup", "trends", "lag", "exporter", "alerts")

#: A check returns a short detail for the "ok" line or raises with the reason.
Check = Callable[[], str]


class Unheard(Exception):
    """A finding that is a warning, not a failure: the line says ``warn`` and the exit code
    stays 0 (a container must not turn unhealthy because alerting is not set up)."""


def redact(url: str) -> str:
    """The URL or DSN without its password: health lines end up in `docker inspect` output."""
    return mask_dsn(url)


def _redis(settings: Settings, url: SecretStr | None = None) -> redis.Redis:
    """A Redis client on ``url`` (default REDIS_URL) whose calls give up after ``TIMEOUT_S``."""
    return redis_client(settings, TIMEOUT_S, url)


def check_redis(settings: Settings, url: SecretStr | None = None) -> Check:
    def run() -> str:
        client = _redis(settings, url)
        try:
            client.ping()
        finally:
            client.close()
        return redact((url or settings.redis_url).get_secret_value())

    return run


def check_postgres(dsn: str) -> Check:
    def run() -> str:
        import psycopg2

        conn = psycopg2.connect(dsn, connect_timeout=int(TIMEOUT_S))
        try:
            with conn.cursor() as cur:
                cur.execute("SET statement_timeout = %s", (int(TIMEOUT_S * 1000),))
                cur.execute("SELECT 1")
                cur.fetchone()
        finally:
            conn.close()
        return redact(dsn)

    return run


def check_kafka(bootstrap: str, topic: str) -> Check:
    def run() -> str:
        from confluent_kafka.admin import AdminClient

        # A metadata request for one topic: proves a broker answers without listing a big
        # cluster. A missing topic is reported but is not a failure: the product cannot
        # create the customer's topic, and the bridge simply waits for it.
        admin = AdminClient(client_config(bootstrap, timeout_s=TIMEOUT_S))
        metadata = admin.list_topics(topic=topic, timeout=TIMEOUT_S)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return f"{bootstrap} (topic {topic} not available yet)"
        return f"{bootstrap} topic {topic}: {len(found.partitions)} partition(s)"

    return run


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return bytes(response.read())


def check_influxdb(url: str) -> Check:
    def run() -> str:
        import json

        # /health needs no token and answers {"status": "pass"} only when InfluxDB is ready.
        body = json.loads(_http_get(url.rstrip("/") + "/health"))
        if body.get("status") != "pass":
            raise RuntimeError(f"status {body.get('status')!r}: {body.get('message', '')}")
        return f"{url} {body.get('version', '')}".rstrip()

    return run


def check_metrics_endpoint(port: int) -> Check:
    def run() -> str:
        _http_get(f"http://127.0.0.1:{port}/metrics")
        return f"http://127.0.0.1:{port}/metrics"

    return run


def receivers(config: str) -> dict[str, list[str]]:
    """Each receiver's integrations (``webhook``, ``email``, ...) in Alertmanager's configuration
    as its API prints it: block YAML marshalled by Alertmanager, so its shape is fixed (the
    product has no YAML parser to spare for one key)."""
    found: dict[str, list[str]] = {}
    section, current = False, ""
    for line in config.splitlines():
        if line[:1] not in ("", " ", "-"):
            section = line.startswith("receivers:")
        elif section and (name := re.match(r"- name: ['\"]?(.*?)['\"]?$", line)):
            current = name.group(1)
            found[current] = []
        elif section and current and (integration := re.match(r"  (\w+)_configs:", line)):
            found[current].append(integration.group(1))
    return found


def check_alert_receivers(url: str | None) -> Check:
    def run() -> str:
        if not url:
            raise Unheard("ALERTMANAGER_URL is not set: nothing checks that alerts reach anyone")
        try:
            status = json.loads(_http_get(url.rstrip("/") + "/api/v2/status"))
        except OSError as error:
            raise Unheard(f"Alertmanager at {url} did not answer ({error}): alerts reach no one") from error
        found = receivers(status["config"]["original"])
        silent = sorted(name for name, integrations in found.items() if not integrations)
        if silent:
            raise Unheard(f"receiver(s) {', '.join(silent)} deliver nowhere: set them in .env and secrets "
                          "(docs/deploying.md, Where alerts go)")
        return "; ".join(f"{name}: {', '.join(integrations)}" for name, integrations in found.items())

    return run


def check_celery_ping(settings: Settings, hostname: str) -> Check:
    def run() -> str:
        from celery import Celery

        # A bare app on the same broker: importing worker.app would load every task module
        # and the beat schedule, which is wasted time for a ping. The pattern makes only the
        # nodes of this host answer (compose names them `<role>@%h`), and limit=1 returns on
        # the first reply instead of waiting out the timeout.
        app = Celery("health", broker=settings.redis_address())
        app.conf.broker_use_ssl = settings.redis_tls() or None
        app.conf.broker_transport_options = {"socket_timeout": TIMEOUT_S, "socket_connect_timeout": TIMEOUT_S,
                                             "max_retries": 1}
        app.conf.broker_connection_retry_on_startup = False
        try:
            replies = app.control.ping(timeout=TIMEOUT_S, limit=1, pattern=f"*@{hostname}", matcher="glob")
        finally:
            app.close()
        nodes = sorted(node for reply in replies or [] for node in reply)
        if not nodes:
            raise RuntimeError(f"no Celery worker on this host (*@{hostname}) answered a ping")
        return ", ".join(nodes)

    return run


class _RunTimes:
    """The finalize times of every duration, read once for all the ``trend:<duration>`` checks
    (they run concurrently: the first to ask queries, the others wait for its answer)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._lock = threading.Lock()
        self._read: tuple[dict[str, Any], Any, Any] | None = None

    def get(self) -> tuple[dict[str, Any], Any, Any]:
        """(duration -> last finalized, first run's start, the server's now)."""
        with self._lock:
            if self._read is None:
                import psycopg2

                conn = psycopg2.connect(self._dsn, connect_timeout=int(TIMEOUT_S))
                try:
                    with conn.cursor() as cur:
                        cur.execute("SET statement_timeout = %s", (int(TIMEOUT_S * 1000),))
                        cur.execute("SELECT duration, max(finished_at) FROM trend_run WHERE status = 'finalized' "
                                    "GROUP BY duration")
                        last = dict(cur.fetchall())
                        cur.execute("SELECT (SELECT min(started_at) FROM trend_run), clock_timestamp()")
                        since, now = cur.fetchone() or (None, None)
                finally:
                    conn.close()
                self._read = (last, since, now)
            return self._read


def check_trend(settings: Settings, duration: Duration, runs: _RunTimes) -> Check:
    bound = stale_after(duration, settings)

    def run() -> str:
        last, since, now = runs.get()
        freshness = Freshness(duration.name, bound, last.get(duration.name), since, now)
        if freshness.stale:
            raise RuntimeError(f"stale: {freshness.describe()}")
        return freshness.describe()

    return run


def queue_depths(client: Any, queues: list[str]) -> dict[str, int]:
    """Messages waiting per queue (kombu's Redis list and its priority lists) and, as
    ``unacked``, messages handed to workers and not yet acknowledged (each worker's own hash)."""
    depths = {queue: sum(int(client.llen(key)) for key in priority_keys(queue)) for queue in queues}
    depths["unacked"] = sum(int(client.hlen(key)) for key in unacked_keys(client))
    return depths


def check_queues(settings: Settings) -> Check:
    queues = [settings.ingest_queue, settings.trends_queue, names.DEFAULT_QUEUE, names.MAINTENANCE_QUEUE]
    bound = 2 * settings.bridge_queue_high_watermark

    def run() -> str:
        client = _redis(settings)
        try:
            depths = queue_depths(client, queues)
        finally:
            client.close()
        text = " ".join(f"{queue}={depth}" for queue, depth in depths.items())
        if depths[settings.ingest_queue] > bound:
            raise RuntimeError(f"{settings.ingest_queue} holds more than {bound} batches (2 x "
                               f"BRIDGE_QUEUE_HIGH_WATERMARK): {text}")
        return text

    return run


def check_redis_memory(settings: Settings) -> Check:
    def run() -> str:
        client = _redis(settings)
        try:
            use = read_memory(client)
        finally:
            client.close()
        if use.ratio >= NEAR_FULL:
            raise RuntimeError(f"Redis nearly full: {describe(use)}; at maxmemory it refuses new messages "
                               "(see docs/operating.md, \"Redis memory\")")
        return describe(use)

    return run


def check_dlq_guard(settings: Settings) -> Check:
    def run() -> str:
        client = _redis(settings)
        try:
            stop = RedisGuardRecords(client, settings.kafka_group_id, settings.kafka_topic).read()
        finally:
            client.close()
        if stop is not None:
            raise RuntimeError(f"stopped consuming since {stop.at or '?'} (by {stop.by or '?'}): {stop.reason}; "
                               "see `aggregator dlq list`, then `aggregator bridge resume`")
        ratio = settings.bridge_max_dlq_ratio
        return "off (BRIDGE_MAX_DLQ_RATIO=1)" if ratio >= 1 else (
            f"not tripped (stops above {ratio:g} of {settings.bridge_dlq_min_events} events invalid)")

    return run


def check_lag(settings: Settings) -> Check:
    def run() -> str:
        lag = group_lag(settings.kafka_bootstrap_servers, settings.kafka_topic, settings.kafka_group_id,
                        timeout_s=TIMEOUT_S)
        text = f"{lag} event(s) of {settings.kafka_topic} not stored yet (group {settings.kafka_group_id})"
        if lag > settings.health_max_ingest_lag:
            raise RuntimeError(f"{text}: more than HEALTH_MAX_INGEST_LAG ({settings.health_max_ingest_lag})")
        return text

    return run


def checks_for(component: str, settings: Settings, hostname: str | None = None) -> list[tuple[str, Check]]:
    """The named checks of one component (see the module docstring for why these)."""
    s = settings
    influx: list[tuple[str, Check]] = []
    if s.event_store == "influxdb" and s.influxdb_v2_url:
        influx = [("influxdb", check_influxdb(s.influxdb_v2_url))]
    redis_checks: list[tuple[str, Check]] = [("redis", check_redis(s))]
    if s.result_backend != s.redis_url:
        redis_checks.append(("results", check_redis(s, s.result_backend)))
    kafka = ("kafka", check_kafka(s.kafka_bootstrap_servers, s.kafka_topic))
    postgres = ("postgres", check_postgres(Database.from_settings(s).dsn))

    if component == "bridge":
        bridge = [*redis_checks[:1], kafka, ("dlq-guard", check_dlq_guard(s))]
        if s.bridge_metrics_port:
            bridge.append(("metrics", check_metrics_endpoint(s.bridge_metrics_port)))
        return bridge
    if component == "worker":
        metrics = [("metrics", check_metrics_endpoint(s.worker_metrics_port))] if s.worker_metrics_port else []
        return [*redis_checks, postgres, *influx, kafka,
                ("celery", check_celery_ping(s, hostname or socket.gethostname())), *metrics]
    if component == "beat":
        return redis_checks[:1]
    if component == "setup":
        return [postgres, *influx, kafka]
    if component == "trends":
        runs = _RunTimes(Database.from_settings(s).dsn)
        return [*((f"trend:{d.name}", check_trend(s, d, runs)) for d in s.durations().values()),
                ("queues", check_queues(s)), ("redis-memory", check_redis_memory(s))]
    if component == "lag":
        return [("lag", check_lag(s))]
    if component == "exporter":
        return [("metrics", check_metrics_endpoint(s.exporter_port))]
    if component == "alerts":
        return [("receivers", check_alert_receivers(s.alertmanager_url))]
    raise ValueError(f"unknown component {component!r} ({', '.join(COMPONENTS)})")


def _timed(check: Check) -> tuple[str, str, float]:
    """("ok" | "warn" | "FAIL", the line's detail, milliseconds)."""
    started = time.monotonic()
    try:
        detail, status = check(), "ok"
    except Unheard as warning:
        detail, status = str(warning), "warn"
    except Exception as error:  # every failure is a line of the report, not a traceback
        reason = " ".join(str(error).split())  # one line per check, whatever the driver says
        detail, status = f"{type(error).__name__}: {reason[:300]}", "FAIL"
    return status, detail, (time.monotonic() - started) * 1000


def check(component: str | Sequence[str], *, settings: Settings, hostname: str | None = None) -> int:
    """Run the components' checks concurrently; print one line each; 0 when all pass.

    ``hostname`` selects the Celery nodes that must answer the ping (default: this host,
    matching the ``-n <role>@%h`` names compose gives the workers).
    """
    components = [component] if isinstance(component, str) else list(component)
    named = list(dict(pair for part in components for pair in checks_for(part, settings, hostname)).items())
    with ThreadPoolExecutor(max_workers=len(named)) as pool:
        results = list(pool.map(_timed, [run for _, run in named]))
    width = max(len(name) for name, _ in named)
    secrets = settings.secret_values()
    failed = 0
    for (name, _), (status, detail, ms) in zip(named, results, strict=True):
        failed += status == "FAIL"
        line = f"{status:<4} {name:<{width}}  {detail} ({ms:.0f} ms)"
        print(scrub(line, secrets), flush=True)
    return 1 if failed else 0
