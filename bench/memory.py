"""Bridge memory under a backlog: backpressure must bound it, whatever waits in Kafka.

The worst case: a large backlog in Kafka and nothing draining the ingest queue (no worker
at all, as if the store were down for good). The bridge reads, publishes batches until the
queue holds ``BRIDGE_QUEUE_HIGH_WATERMARK`` tasks, pauses its partitions (log line
``msg=paused``) and must then hold still: Kafka keeps the rest. Its RSS is sampled every
0.2 s from start until 20 s after the pause, and the kernel's high-water mark (``VmHWM``)
is the figure reported. The same run with a 10x smaller backlog is the reference: the two
peaks should be about equal, which is what "bounded" means.

What the peak is made of: the interpreter with its imports, plus librdkafka's prefetch
before the pause (it keeps fetching until ``queued.min.messages`` = 100,000 messages per
partition or ``queued.max.messages.kbytes`` = ``KAFKA_PREFETCH_KBYTES`` (16 MiB) in all
are queued, whichever comes first) — librdkafka drops the prefetch at the pause, so the
"settled" RSS after it is lower. A backlog smaller than the prefetch limit (~33,000
events of ~500 bytes here) is prefetched whole; any backlog above it gives the same peak.

Where the events are at the pause: in Redis (summed over the queued tasks' batches), in
the bridge (consumed but not yet published: read from the bridge's final ``bridge stopped``
totals, since its SIGTERM flush publishes them), and in Kafka (the rest).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    AGGREGATOR,
    BenchError,
    MiB,
    Processes,
    Stack,
    find_log_line,
    produce_fast,
    wait_for,
)

# Fixed batches of 1,000 (min = max): what sits in Redis at the pause is then the same
# 20 x 1,000 events in every run, and both backlogs are far larger than that, so both runs
# really pause. (With the dynamic ceiling starting from an idle rate estimate, the first
# 20 batches would be tiny and the bridge would pause after a few hundred events — an
# easier case than this one.)
MEMORY_SETTINGS: dict[str, str] = {
    "BRIDGE_QUEUE_HIGH_WATERMARK": "20",
    "BRIDGE_QUEUE_LOW_WATERMARK": "10",
    "BRIDGE_MIN_BATCH": "1000",
    "BRIDGE_MAX_BATCH": "1000",
    "BRIDGE_MAX_BATCH_AGE_S": "0.5",
}
SAMPLE_INTERVAL_S = 0.2


@dataclass
class MemoryRun:
    backlog: int
    peak_rss: int  # VmHWM, bytes
    rss_at_pause: int
    rss_settled: int  # median over the last quarter of the sampling after the pause
    samples: int
    seconds_to_pause: float
    sampled_after_pause_s: float
    queued_tasks: int
    queued_events: int  # in Redis at the end of the sampling
    held_in_bridge: int  # consumed, not published
    consumed: int

    @property
    def in_kafka(self) -> int:
        return self.backlog - self.consumed


def _status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmHWM: the peak RSS the kernel has seen)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} in /proc/{pid}/status")


def _median(values: list[int]) -> int:
    return sorted(values)[len(values) // 2] if values else 0


def queued(redis_url: str, queue: str = "ingest") -> tuple[int, int]:
    """(tasks, events) waiting in the ingest queue."""
    import redis

    from tests.support.helpers import queued_batch_sizes

    sizes = queued_batch_sizes(redis.Redis.from_url(redis_url), queue)
    return len(sizes), sum(sizes)


def run_one(stack: Stack, procs: Processes, payloads: list[bytes], *, sample_s: float) -> MemoryRun:
    """Fill a fresh topic with ``payloads``, run the bridge alone, sample it past its pause."""
    topic = stack.fresh_topic("backlog", partitions=2)
    produce_fast(stack.kafka.bootstrap, topic, payloads)
    stack.flush_redis()
    env = stack.env(topic=topic, dsn=stack.fresh_database("memory"), **MEMORY_SETTINGS)
    start = time.monotonic()
    bridge = procs.spawn([*AGGREGATOR, "bridge"], env, f"memory-bridge-{len(payloads)}")
    try:
        samples: list[int] = []

        def sample() -> None:
            # VmRSS from the same file as VmHWM, so a sample can never exceed the peak
            # (psutil's RSS comes from statm and differs by up to a MiB).
            samples.append(_status_kib(bridge.pid, "VmRSS") * 1024)

        def paused() -> bool:
            sample()
            return "msg=paused" in procs.log_text(bridge)

        paused_at = wait_for(paused, 120 + len(payloads) / 2000, "bridge paused",
                             interval=SAMPLE_INTERVAL_S, alive=lambda: procs.check_alive(bridge))
        rss_at_pause = samples[-1]
        after_pause: list[int] = []
        next_at = paused_at
        while time.monotonic() - paused_at < sample_s:
            procs.check_alive(bridge)
            sample()
            after_pause.append(samples[-1])
            next_at += SAMPLE_INTERVAL_S
            time.sleep(max(0.0, next_at - time.monotonic()))
        peak_kib = _status_kib(bridge.pid, "VmHWM")
        sampled_after = time.monotonic() - paused_at
        tasks, events = queued(stack.redis.url)
        procs.terminate(bridge)  # SIGTERM: flushes what it held (published now) and logs totals
        stats = find_log_line(procs.log_text(bridge), "bridge stopped")
        if stats is None:
            raise BenchError(f"bridge did not log its totals:\n{procs.tail(bridge)}")
        consumed = int(stats["consumed"])
        return MemoryRun(
            backlog=len(payloads), peak_rss=peak_kib * 1024, rss_at_pause=rss_at_pause,
            rss_settled=_median(after_pause[-max(1, len(after_pause) // 4):]), samples=len(samples),
            seconds_to_pause=paused_at - start,
            sampled_after_pause_s=sampled_after, queued_tasks=tasks, queued_events=events,
            held_in_bridge=consumed - events, consumed=consumed,
        )
    finally:
        procs.terminate(bridge, timeout=10)


def run(stack: Stack, payloads: list[bytes], *, reference: int, sample_s: float = 20.0) -> list[MemoryRun]:
    """The reference backlog (a prefix of ``payloads``) first, then the whole of it."""
    procs = Processes(stack.root / "logs" / f"memory-{os.getpid()}")
    try:
        return [run_one(stack, procs, payloads[:reference], sample_s=sample_s),
                run_one(stack, procs, payloads, sample_s=sample_s)]
    finally:
        procs.close()


def describe(run: MemoryRun) -> str:
    return (f"backlog {run.backlog:,}: peak RSS (VmHWM) {run.peak_rss / MiB:.0f} MiB, at pause "
            f"{run.rss_at_pause / MiB:.0f} MiB, settled {run.rss_settled / MiB:.0f} MiB ({run.samples} samples, "
            f"{run.sampled_after_pause_s:.0f} s after the pause); paused after {run.seconds_to_pause:.1f} s; "
            f"held: Redis {run.queued_tasks} tasks = {run.queued_events:,} events, bridge "
            f"{run.held_in_bridge:,} events, Kafka {run.in_kafka:,} events ({run.in_kafka / run.backlog:.1%} "
            f"of the backlog)")
