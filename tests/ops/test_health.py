"""`aggregator health`: passes on answering dependencies, fails fast and readably otherwise."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import timedelta

import pytest

from tests.support.devstack.services import free_port
from tests.support.helpers import AGGREGATOR
from worker.config.settings import Settings
from worker.ops.health import check

pytestmark = pytest.mark.integration


def test_beat_health_passes_on_a_live_redis(redis_url: str) -> None:
    done = subprocess.run([*AGGREGATOR, "health", "beat"], env={**os.environ, "REDIS_URL": redis_url},
                          capture_output=True, text=True, timeout=30)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("ok   redis"), done.stdout


def test_failures_are_one_line_each_redacted_and_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    closed = free_port()  # nothing listens there
    settings = Settings(postgres_dsn=f"postgresql://aggregator:hunter2@127.0.0.1:{closed}/aggregator",
                        kafka_bootstrap_servers=f"127.0.0.1:{closed}")
    started = time.monotonic()
    assert check("setup", settings=settings) == 1
    elapsed = time.monotonic() - started
    out = capsys.readouterr().out
    print(out)
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [["FAIL", "postgres"], ["FAIL", "kafka"]], out
    assert "hunter2" not in out
    # Bounded, not hanging on an unreachable peer (each check has a ~3 s timeout); the margin
    # is for a loaded CI machine, where 8 s was once exceeded.
    assert elapsed < 15, f"checks with ~3 s timeouts took {elapsed:.1f}s"


def _finalized(dsn: str, ages: dict[str, timedelta], started: timedelta = timedelta(days=30)) -> None:
    """One finalized run per duration, finished ``ages[duration]`` ago."""
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        for name, age in ages.items():
            cur.execute("INSERT INTO trend_run (run_id, duration, calculated_at, status, started_at, finished_at) "
                        "VALUES (%s, %s, now() - %s, 'finalized', now() - %s, now() - %s)",
                        (f"{name}:test", name, age, started, age))
    conn.close()


def test_trends_health_names_the_stale_duration(pg_dsn: str, redis_url: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url)
    fresh = dict.fromkeys(("currently", "today", "week", "month", "year"), timedelta(minutes=1))
    _finalized(pg_dsn, {**fresh, "currently": timedelta(hours=1)})
    assert check("trends", settings=settings) == 1
    lines = {line.split()[1]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["trend:currently"].startswith("FAIL trend:currently")
    assert "stale: last finalized 60 min ago (stale after 10 min)" in lines["trend:currently"]
    assert all(lines[f"trend:{name}"].startswith("ok ") for name in ("today", "week", "month", "year"))
    assert lines["queues"].startswith("ok   queues") and "ingest=0 trends=0" in lines["queues"]


def test_trends_health_passes_when_fresh_and_fails_on_a_flooded_ingest_queue(
        pg_dsn: str, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url, bridge_queue_high_watermark=3,
                        bridge_queue_low_watermark=1)
    _finalized(pg_dsn, dict.fromkeys(("currently", "today", "week", "month", "year"), timedelta(minutes=1)))
    assert check(["beat", "trends"], settings=settings) == 0
    capsys.readouterr()
    redis.Redis.from_url(redis_url).rpush("ingest", *[b"{}"] * 7)  # more than 2 x the high watermark
    assert check("trends", settings=settings) == 1
    out = capsys.readouterr().out
    assert "FAIL queues" in out and "ingest holds more than 6 batches" in out and "ingest=7" in out


def test_trends_health_says_when_redis_is_nearly_full(pg_dsn: str, redis_url: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    settings = Settings(postgres_dsn=pg_dsn, redis_url=redis_url)
    _finalized(pg_dsn, dict.fromkeys(("currently", "today", "week", "month", "year"), timedelta(minutes=1)))
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used * 2)
        assert check("trends", settings=settings) == 0
        assert "MiB maxmemory (" in capsys.readouterr().out
        client.config_set("maxmemory", int(used * 1.05))  # 95% used
        assert check("trends", settings=settings) == 1
        out = capsys.readouterr().out
        assert "FAIL redis-memory" in out and "Redis nearly full" in out
    finally:
        client.config_set("maxmemory", 0)
    assert check("trends", settings=settings) == 0
    assert "no maxmemory" in capsys.readouterr().out


def test_lag_health_counts_what_the_group_has_not_stored(kafka, topics: dict[str, str],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from confluent_kafka import Producer

    # One record per request: Tansu counts its high watermark per record batch, Kafka per record.
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 0})
    for i in range(12):
        producer.produce(topics["topic"], b"{}", partition=i % 2)
        producer.flush(10)
    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap, kafka_topic=topics["topic"],
                        kafka_group_id=topics["group"], health_max_ingest_lag=12)
    assert check("lag", settings=settings) == 0
    assert "12 event(s) of" in capsys.readouterr().out
    assert check("lag", settings=settings.model_copy(update={"health_max_ingest_lag": 11})) == 1
    assert "more than HEALTH_MAX_INGEST_LAG (11)" in capsys.readouterr().out


def test_bridge_health_fails_while_the_dead_letter_guard_holds(kafka, topics: dict[str, str], redis_url: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    from worker.ingest.bridge.guard_state import GuardStop, RedisGuardRecords

    settings = Settings(redis_url=redis_url, kafka_bootstrap_servers=kafka.bootstrap, kafka_topic=topics["topic"],
                        kafka_group_id=topics["group"])
    assert check("bridge", settings=settings) == 0
    assert "ok   dlq-guard  not tripped (stops above 0.5 of 1000 events invalid)" in capsys.readouterr().out
    records = RedisGuardRecords(redis.Redis.from_url(redis_url), topics["group"], topics["topic"])
    records.write(GuardStop("26 of the last 50 events were dead-lettered", "x", "2026-01-01T00:00:00Z", "h:1"))
    assert check("bridge", settings=settings) == 1
    line = next(line for line in capsys.readouterr().out.splitlines() if "dlq-guard" in line)
    assert line.startswith("FAIL dlq-guard") and "since 2026-01-01T00:00:00Z (by h:1): 26 of the last 50" in line
    assert records.clear() is not None and check("bridge", settings=settings) == 0
