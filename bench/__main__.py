"""``python -m bench``: every benchmark, then one plain-text results table.

``python -m bench soak`` runs the soak instead (``bench/soak.py``: simulated days of
operation; ``--quick`` for its smoke test); ``python -m bench scale`` the scaling
measurements (``bench/scale.py``: ingest with 1-2 bridges and workers, the `year` run
against events).

``--quick`` runs small sizes (for development: other engineers share this machine);
``--only ingest|trends|memory`` runs one benchmark; ``--profile DIR`` samples the bridge and
the worker with py-spy during the ingest run (the figures of a profiled run are slower and
marked so). Services (Tansu, Redis, PostgreSQL) are started once for the ingest and memory
benchmarks and stopped at the end, also on Ctrl-C, SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import ingest, memory
from bench.common import MiB, Stack, generate_events, machine_line

DOIS = 5_000
SEED = 7


@dataclass(frozen=True)
class Sizes:
    events: int
    baseline_events: int
    backlog: int
    reference_backlog: int
    sample_s: float


FULL = Sizes(events=200_000, baseline_events=20_000, backlog=1_000_000, reference_backlog=100_000, sample_s=20.0)
# Quick backlogs stay >= 100,000, well above librdkafka's prefetch before the pause
# (KAFKA_PREFETCH_KBYTES, ~33,000 events): a smaller backlog has a smaller peak (bench/memory.py).
QUICK = Sizes(events=20_000, baseline_events=2_000, backlog=200_000, reference_backlog=100_000, sample_s=5.0)


def progress(text: str) -> None:
    """Progress goes to stderr, so stdout holds only the results."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _sigterm(_signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into the same unwinding as Ctrl-C, so every `finally` stops its processes.
    raise KeyboardInterrupt


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--only", choices=("ingest", "trends", "memory"), help="run one benchmark")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="py-spy the bridge and the worker during the ingest run (slower figures)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="PostgreSQL without fsync and synchronous commit (the tests' settings), "
                             "instead of its durable defaults")
    parser.add_argument("--keep-logs", action="store_true", help="keep the services' and processes' logs")
    parser.add_argument("--events", type=int, help="events of the ingest benchmark")
    parser.add_argument("--baseline-events", type=int, help="events the baseline processes (extrapolated)")
    parser.add_argument("--backlog", type=int, help="backlog of the memory benchmark")
    parser.add_argument("--reference-backlog", type=int, help="the memory benchmark's smaller reference backlog")
    parser.add_argument("--sample-seconds", type=float, help="RSS sampling after the bridge paused")
    return parser.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    base = QUICK if args.quick else FULL
    return Sizes(
        events=args.events or base.events,
        baseline_events=args.baseline_events or base.baseline_events,
        backlog=args.backlog or base.backlog,
        reference_backlog=args.reference_backlog or base.reference_backlog,
        sample_s=args.sample_seconds or base.sample_s,
    )


def run_trends(quick: bool) -> list[str]:
    """``bench/trend_math.py`` as it is; its own table, captured for the final one."""
    from bench import trend_math

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trend_math.main(["--quick"] if quick else [])
    return ["trend math (bench/trend_math.py" + (" --quick" if quick else "") + "):",
            *(("  " + line).rstrip() for line in out.getvalue().rstrip().splitlines())]


def _secs(value: float | None) -> str:
    return "?" if value is None else f"{value:.2f} s"


def ingest_lines(result: ingest.IngestResult, profiled: bool) -> list[str]:
    p, b = result.product, result.baseline
    flag = " (PROFILED: py-spy attached, slower than unprofiled)" if profiled else ""
    verdict = "met" if result.ratio >= 10 else "MISSED"
    lines = [
        f"ingest {p.events:,} events ({DOIS:,} DOIs){flag}, timed from the consumer group join to the last "
        f"event stored: product {p.throughput:,.0f} ev/s | baseline (per-event json + INSERT + commit, "
        f"{b.events:,} ev extrapolated) {b.rate:,.0f} ev/s | ratio {result.ratio:.1f}x (target >= 10x: {verdict})",
        f"  wall from start, start-up included on both sides: product {p.seconds:.2f} s | baseline "
        f"{b.wall_seconds(p.events):.1f} s ({b.join_seconds:.2f} s group join + {p.events / b.rate:.1f} s) | "
        f"ratio {result.wall_ratio:.1f}x",
        f"  product: {p.seconds:.2f} s from starting bridge + worker to {p.events:,} rows; of these, "
        f"{_secs(p.assigned_s)} until the bridge's consumer group join was done (partitions assigned) and "
        f"{p.first_row_s:.2f} s until the first row; from the first row to the last {p.steady_rate:,.0f} ev/s",
        f"  product {p.cpu.line(p.events)}",
        f"  bridge totals: consumed={p.bridge_stats.get('consumed', '?')} "
        f"published_batches={p.bridge_stats.get('published_batches', '?')} "
        f"dead_lettered={p.bridge_stats.get('dead_lettered', '?')}; {ingest.batch_summary(p.batch_sizes)}",
        "  settings: " + " ".join(f"{k}={v}" for k, v in ingest.PRODUCT_SETTINGS.items())
        + f"; worker -Q ingest -c {ingest.WORKER_CONCURRENCY}",
        f"  baseline: group join {b.join_seconds:.2f} s, then {b.events:,} events in {b.seconds:.2f} s; "
        f"{p.events:,} would take {p.events / b.rate:,.0f} s",
        f"  baseline {b.cpu.line(b.events)}",
        f"  (loading the topic, not timed: {result.produce_seconds:.1f} s)",
    ]
    for name, path in p.profiles.items():
        lines.append(f"  py-spy {name}: {path}; top frames by own CPU time (own / inclusive):")
        lines.extend(f"    {own:5.1%} {incl:5.1%}  {frame}" for own, incl, frame in ingest.top_frames(path))
    return lines


def memory_lines(runs: list[memory.MemoryRun]) -> list[str]:
    reference, big = runs
    bounded = big.peak_rss <= reference.peak_rss * 1.15 + 5 * MiB
    verdict = "bounded by backpressure" if bounded else "NOT bounded: grows with the backlog"
    return [
        f"bridge peak RSS with {big.backlog:,} backlog: {big.peak_rss / MiB:.0f} MiB "
        f"({reference.backlog:,} backlog: {reference.peak_rss / MiB:.0f} MiB) — {verdict}",
        *(f"  {memory.describe(r)}" for r in runs),
        "  settings: no worker; " + " ".join(f"{k}={v}" for k, v in memory.MEMORY_SETTINGS.items()),
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["soak"]:  # `python -m bench soak ...`: simulated days of operation (bench/soak.py)
        from bench import soak

        return soak.main(argv[1:])
    if argv[:1] == ["scale"]:  # `python -m bench scale ...`: ingest and the `year` run at scale (bench/scale.py)
        from bench import scale

        return scale.main(argv[1:])
    args = parse_args(argv)
    sizes = sizes_from(args)
    signal.signal(signal.SIGTERM, _sigterm)
    selected = {args.only} if args.only else {"ingest", "memory", "trends"}
    if args.profile is not None and shutil.which("py-spy") is None:
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    lines = [machine_line()]

    if "trends" in selected:
        progress("trend math")
        trend_lines = run_trends(args.quick)
    else:
        trend_lines = []

    if selected & {"ingest", "memory"}:
        needed = max(sizes.events if "ingest" in selected else 0, sizes.backlog if "memory" in selected else 0)
        progress(f"generating {needed:,} events ({DOIS:,} DOIs, seed {SEED})")
        payloads = generate_events(needed, DOIS, SEED)
        avg = sum(map(len, payloads)) / len(payloads)
        lines.append(f"events: worker.ops.demo.demo_events, {DOIS:,} DOIs, seed {SEED}, "
                     f"{avg:.0f} bytes each on average")
        progress("starting Tansu, Redis, PostgreSQL")
        stack = Stack.start(durable=not args.no_fsync)
        lines.append("PostgreSQL: " + ("fsync=off, synchronous_commit=off, full_page_writes=off (--no-fsync)"
                                       if args.no_fsync else "durable defaults (fsync=on, synchronous_commit=on)"))
        failed = True
        try:
            if "ingest" in selected:
                progress(f"ingest: {sizes.events:,} events, baseline on {sizes.baseline_events:,}")
                result = ingest.run(stack, payloads[: sizes.events], baseline_events=sizes.baseline_events,
                                    profile_dir=args.profile)
                lines.extend(ingest_lines(result, args.profile is not None))
            if "memory" in selected:
                progress(f"memory: backlogs {sizes.reference_backlog:,} and {sizes.backlog:,}")
                runs = memory.run(stack, payloads[: sizes.backlog], reference=sizes.reference_backlog,
                                  sample_s=sizes.sample_s)
                lines.extend(memory_lines(runs))
            failed = False
        finally:
            progress("stopping services")
            stack.close(keep_logs=args.keep_logs or failed)

    lines.extend(trend_lines)
    lines.append(machine_line().replace("machine:", "machine at the end:", 1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
