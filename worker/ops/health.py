"""`aggregator health <component>...`: the container healthcheck of every product service.

It must never hang: each check gives up after ``TIMEOUT_S`` and they run concurrently, so a
dead dependency costs one timeout, not the sum. What each component checks and why:
docs/operating.md, "Health checks".
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
from contextlib import closing
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from worker.celeryapp.liveness import unacked_keys
from worker.celeryapp.resources import redis_client
from worker.config.settings import Settings
from worker.core import names
from worker.core.durations import Duration
from worker.core.masking import mask_dsn, scrub
from worker.db.connection import Database, connect
from worker.ingest.bridge.guard_state import RedisGuardRecords
from worker.ingest.kafka_config import Brokers, client_config, group_lag
from worker.ingest.redis_memory import NEAR_FULL, MemoryUse
from worker.trends.freshness import Freshness, stale_after

if TYPE_CHECKING:
    import redis

TIMEOUT_S = 3.0
#: The components `aggregator health` knows.
COMPONENTS = ("bridge", "worker", "beat", "setup", "trends", "lag", "exporter", "alerts")

#: A check returns a short detail for the "ok" line or raises with the reason.
Check = Callable[[], str]
RunTimes = tuple[dict[str, Any], Any, Any]


class Unheard(Exception):
    """A finding that is a warning, not a failure: the line says ``warn`` and the exit code
    stays 0 (a container must not turn unhealthy because alerting is not set up)."""


def query(dsn: str, *statements: str, params: Sequence[Any] = (), application_name: str = "aggregator-health",
          timeout_s: float = TIMEOUT_S) -> list[list[tuple[Any, ...]]]:
    """Each statement's rows (each given ``params``), on one connection whose connect and
    statements give up after ``timeout_s``: a read for a person or a scrape must not hang."""
    conn = connect(dsn, application_name=application_name, timeout_s=timeout_s)
    with closing(conn), conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(timeout_s * 1000),))
        results = []
        for statement in statements:
            cur.execute(statement, params or None)
            results.append(cur.fetchall())
        return results


def _http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        return bytes(response.read())


def queue_depths(client: redis.Redis, settings: Settings) -> dict[str, int]:
    """Messages waiting per queue (kombu's list) and, as ``unacked``, those handed to workers
    and not acknowledged yet (each worker's own hash): one round trip."""
    queues = [settings.ingest_queue, settings.trends_queue, names.DEFAULT_QUEUE, names.MAINTENANCE_QUEUE]
    with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
        for key in unacked_keys(client):
            pipe.hlen(key)
        counts = [int(n) for n in pipe.execute()]
    depths = dict(zip(queues, counts[:len(queues)], strict=True))
    depths["unacked"] = sum(counts[len(queues):])
    return depths


def redis_ping(settings: Settings, url: SecretStr | None = None) -> str:
    with redis_client(settings, TIMEOUT_S, url) as client:
        client.ping()
    return mask_dsn((url or settings.redis_url).get_secret_value())


def postgres_select(dsn: str) -> str:
    query(dsn, "SELECT 1")
    return mask_dsn(dsn)


def kafka_topic(bootstrap: Brokers, topic: str) -> str:
    from confluent_kafka.admin import AdminClient

    # One topic's metadata proves a broker answers without listing a big cluster. A missing
    # topic is no failure: the product cannot create the customer's topic; the bridge waits.
    config = client_config(bootstrap, timeout_s=TIMEOUT_S)
    found = AdminClient(config).list_topics(topic=topic, timeout=TIMEOUT_S).topics.get(topic)
    where = config["bootstrap.servers"]
    if found is None or found.error is not None:
        return f"{where} (topic {topic} not available yet)"
    return f"{where} topic {topic}: {len(found.partitions)} partition(s)"


def influxdb_ready(url: str) -> str:
    # /health needs no token and answers {"status": "pass"} only when InfluxDB is ready.
    body = json.loads(_http_get(url.rstrip("/") + "/health"))
    if body.get("status") != "pass":
        raise RuntimeError(f"status {body.get('status')!r}: {body.get('message', '')}")
    return f"{url} {body.get('version', '')}".rstrip()


def metrics_endpoint(port: int) -> str:
    _http_get(f"http://127.0.0.1:{port}/metrics")
    return f"http://127.0.0.1:{port}/metrics"


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


def alert_receivers(url: str | None) -> str:
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


def celery_ping(settings: Settings, hostname: str) -> str:
    from celery import Celery

    # A bare app on the same broker: worker.app would load every task module for a ping.
    # Only this host's nodes answer (compose names them `<role>@%h`); limit=1 returns on
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


def _run_times(dsn: str) -> Callable[[], RunTimes]:
    """(duration -> last finalized, first run's start, the server's now), read once for all the
    ``trend:<duration>`` checks: they run concurrently, the first to ask queries for the others."""
    lock = threading.Lock()
    read: list[RunTimes] = []

    def get() -> RunTimes:
        with lock:
            if not read:
                last, ((since, now),) = query(dsn, "SELECT duration, max(finished_at) FROM trend_run "
                                              "WHERE status = 'finalized' GROUP BY duration",
                                              "SELECT (SELECT min(started_at) FROM trend_run), clock_timestamp()")
                read.append((dict(last), since, now))
            return read[0]

    return get


def trend_fresh(settings: Settings, duration: Duration, runs: Callable[[], RunTimes]) -> str:
    last, since, now = runs()
    freshness = Freshness(duration.name, stale_after(duration, settings), last.get(duration.name), since, now)
    if freshness.stale:
        raise RuntimeError(f"stale: {freshness.describe()}")
    return freshness.describe()


def queues_drain(settings: Settings) -> str:
    bound = 2 * settings.bridge_queue_high_watermark
    with redis_client(settings, TIMEOUT_S) as client:
        depths = queue_depths(client, settings)
    text = " ".join(f"{queue}={depth}" for queue, depth in depths.items())
    if depths[settings.ingest_queue] > bound:
        raise RuntimeError(f"{settings.ingest_queue} holds more than {bound} batches (2 x "
                           f"BRIDGE_QUEUE_HIGH_WATERMARK): {text}")
    return text


def redis_memory(settings: Settings) -> str:
    with redis_client(settings, TIMEOUT_S) as client:
        use = MemoryUse.read(client)
    if use.ratio >= NEAR_FULL:
        raise RuntimeError(f"Redis nearly full: {use}; at maxmemory it refuses new messages "
                           "(see docs/operating.md, \"Redis memory\")")
    return str(use)


def dlq_guard(settings: Settings) -> str:
    with redis_client(settings, TIMEOUT_S) as client:
        stop = RedisGuardRecords(client, settings.kafka_group_id, settings.kafka_topic).read()
    if stop is not None:
        raise RuntimeError(f"stopped consuming since {stop.at or '?'} (by {stop.by or '?'}): {stop.reason}; "
                           "see `aggregator dlq list`, then `aggregator bridge resume`")
    ratio = settings.bridge_max_dlq_ratio
    return "off (BRIDGE_MAX_DLQ_RATIO=1)" if ratio >= 1 else (
        f"not tripped (stops above {ratio:g} of {settings.bridge_dlq_min_events} events invalid)")


def ingest_lag(settings: Settings) -> str:
    lag = group_lag(settings.kafka_connection(), settings.kafka_topic, settings.kafka_group_id,
                    timeout_s=TIMEOUT_S)
    text = f"{lag} event(s) of {settings.kafka_topic} not stored yet (group {settings.kafka_group_id})"
    if lag > settings.health_max_ingest_lag:
        raise RuntimeError(f"{text}: more than HEALTH_MAX_INGEST_LAG ({settings.health_max_ingest_lag})")
    return text


def checks_for(component: str, settings: Settings, hostname: str | None = None) -> Sequence[tuple[str, Check]]:
    """The named checks of one component: only what its process talks to, so an InfluxDB
    outage does not mark the bridge unhealthy."""
    s = settings
    url = s.influxdb_v2_url
    influx = [("influxdb", partial(influxdb_ready, url))] if url and s.event_store == "influxdb" else []
    redis_checks = [("redis", partial(redis_ping, s))]
    if s.result_backend != s.redis_url:
        redis_checks.append(("results", partial(redis_ping, s, s.result_backend)))
    kafka = ("kafka", partial(kafka_topic, s.kafka_connection(), s.kafka_topic))
    postgres = ("postgres", partial(postgres_select, Database.from_settings(s).dsn))
    metrics = {"bridge": s.bridge_metrics_port, "worker": s.worker_metrics_port, "exporter": s.exporter_port}
    metrics_check = [("metrics", partial(metrics_endpoint, metrics[component]))] if metrics.get(component) else []
    match component:
        case "bridge":
            return [redis_checks[0], kafka, ("dlq-guard", partial(dlq_guard, s)), *metrics_check]
        case "worker":
            return [*redis_checks, postgres, *influx, kafka,
                    ("celery", partial(celery_ping, s, hostname or socket.gethostname())), *metrics_check]
        case "beat":
            return redis_checks[:1]
        case "setup":
            return [postgres, *influx, kafka]
        case "trends":
            runs = _run_times(Database.from_settings(s).dsn)
            return [*((f"trend:{d.name}", partial(trend_fresh, s, d, runs)) for d in s.durations().values()),
                    ("queues", partial(queues_drain, s)),
                    ("redis-memory", partial(redis_memory, s))]
        case "lag":
            return [("lag", partial(ingest_lag, s))]
        case "exporter":
            return metrics_check
        case "alerts":
            return [("receivers", partial(alert_receivers, s.alertmanager_url))]
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
    ``hostname``: whose Celery nodes must answer the ping (default: this host)."""
    components = [component] if isinstance(component, str) else list(component)
    named = list(dict(pair for part in components for pair in checks_for(part, settings, hostname)).items())
    with ThreadPoolExecutor(max_workers=len(named)) as pool:
        results = list(pool.map(_timed, [run for _, run in named]))
    width = max(len(name) for name, _ in named)
    secrets = settings.secret_values()
    for (name, _), (status, detail, ms) in zip(named, results, strict=True):
        print(scrub(f"{status:<4} {name:<{width}}  {detail} ({ms:.0f} ms)", secrets), flush=True)
    return 1 if any(status == "FAIL" for status, _, _ in results) else 0
