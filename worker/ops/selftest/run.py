"""The self-test: probe events through the bridge's decoding, the ingest wire format,
``store.write`` and the trend queries, one line per check, then remove every trace whatever
happened (a failure, Ctrl-C, SIGTERM). docs/deploying.md, "After every deployment".
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from worker.config.settings import Settings
from worker.core import alignment, day_rollup, partitions
from worker.core.aggregates import Aggregates
from worker.core.durations import Duration
from worker.core.events import InvalidEvent, Point, decode_event, points_from_wire, points_to_wire
from worker.core.failures import first_line
from worker.core.masking import scrub
from worker.db.connection import Database
from worker.ops.selftest.compare import (
    Check,
    aggregate_differences,
    count_differences,
    list_differences,
    row_differences,
    summary,
    verdict,
)
from worker.ops.selftest.influx import PROBE_MAX_AGE_S, SCRATCH_RETENTION_S, InfluxAdmin
from worker.ops.selftest.postgres import RUN_ID_PREFIX, PostgresScratch, ProbeEvents
from worker.ops.selftest.probe import POSTGRES_NOW_NS, build_probe, upstream_event
from worker.store import EventStore, StoreRejected, open_store
from worker.trends.math import TREND_COLUMNS, compute_trends, rows
from worker.trends.state import PostgresRunState

Emit = Callable[[str], None]
_PRINT: Emit = functools.partial(print, flush=True)  # each line as it completes

_SUMS = len(fields(Aggregates)) - 1


def report(settings: Settings, emit: Emit = _PRINT) -> int:
    """Each check's line through ``emit`` as it completes, then the summary; 0 when every
    check passed, else 1."""
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        emit(check.line())

    # SIGTERM (`docker stop`, a timeout) interrupts as Ctrl-C does, so the removal runs.
    with _handling(signal.default_int_handler, signal.SIGTERM):
        SelfTest(settings, record, emit).run()
    emit(summary(checks))
    return 0 if all(check.ok for check in checks) else 1


class SelfTest:
    def __init__(self, settings: Settings, record: Callable[[Check], None], emit: Emit) -> None:
        self.settings = settings
        self.record = record
        self.emit = emit
        self.durations = list(settings.durations().values())
        token = uuid.uuid4().hex[:12]
        self.runs = [f"{RUN_ID_PREFIX}{d.name}:{token}" for d in self.durations]
        self.bucket = f"{settings.influxdb_bucket_prefix}selftest-{token}"
        self.influx = settings.event_store == "influxdb"
        events = None
        if self.influx:
            now = alignment.whole_second_ns(time.time_ns())
            self.probe = build_probe(self.durations, now, max_age_s=PROBE_MAX_AGE_S)
        else:  # the probe's events share discussion_event with the real ones
            self.probe = build_probe(self.durations, POSTGRES_NOW_NS)
            days = partitions.days_of_ns(p.time_ns for p in self.probe.events)
            events = ProbeEvents(self.probe.prefix, self.probe.time_range_ns(), partitions.EVENTS.ranges_of_days(days))
        self.scratch = PostgresScratch(Database.from_settings(settings), events)

    def run(self) -> None:
        self.scratch.lock()  # the first contact: PostgreSQL not answering ends here
        with contextlib.ExitStack() as stack:
            stack.callback(self.scratch.close)
            admin = stack.enter_context(contextlib.closing(InfluxAdmin(self.settings))) if self.influx else None
            store: EventStore | None = None
            run_state: PostgresRunState | None = None
            completed = False
            try:
                self._header(admin)
                if admin is not None:
                    for check in admin.layout_checks():
                        self.record(check)
                self.scratch.prepare()
                if admin is None:
                    store = open_store(self.settings)
                else:
                    admin.create_scratch(self.bucket)
                    store = open_store(self.settings.model_copy(update={"influxdb_v2_bucket": self.bucket}))
                run_state = PostgresRunState.from_settings(self.settings)
                self._probe(store, run_state)
                completed = True
            finally:
                with _interrupts_deferred():
                    self._remove(admin, store, run_state, raise_errors=completed)

    def _header(self, admin: InfluxAdmin | None) -> None:
        at = datetime.fromtimestamp(self.probe.now_ns // alignment.NS_PER_S, UTC).isoformat()
        where = (f"InfluxDB at {self.settings.addresses()['InfluxDB']}, scratch bucket "
                 f"{self.bucket}" if admin is not None else
                 f"PostgreSQL at {self.settings.addresses()['PostgreSQL']}")
        line = (f"selftest of the event store ({where}): {len(self.probe.events)} probe events on "
                f"{len(self.probe.dois)} DOIs {self.probe.prefix}*, run time {at}, durations "
                f"{', '.join(d.name for d in self.durations)}")
        if self.probe.left_out:
            names = sorted({item.split(":")[0] for item in self.probe.left_out})
            line += (f"; {len(self.probe.left_out)} edge events of {', '.join(names)} not probed (older than the "
                     f"scratch bucket's {SCRATCH_RETENTION_S // 86_400} d retention)")
        self.emit(line)

    def _probe(self, store: EventStore, run_state: PostgresRunState) -> None:
        probe = self.probe
        batches = self._decoded()
        if batches is None:
            return
        self._write(store, batches)
        start, stop = probe.time_range_ns()
        counts = {doi: n for doi, n in store.count_per_doi(start, stop).items() if doi.startswith(probe.prefix)}
        self.record(verdict("events stored", count_differences(counts, probe.counts()),
                            f"{len(probe.events)} events on {len(probe.dois)} DOIs: the redelivered one once, "
                            "the two in one second twice"))
        for duration, run in zip(self.durations, self.runs, strict=True):
            self._duration(store, run_state, duration, run)

    def _decoded(self) -> list[list[Point]] | None:
        """The probe's batches as ingestion would hand them to the store: each event decoded
        from its Kafka message as the bridge does, each batch through the ingest task's wire
        format."""
        batches, differences = [], []
        try:
            for batch in self.probe.batches:
                decoded = [decode_event(upstream_event(point)) for point in batch]
                differences += [f"{point.event_id}: decoded as {got}" for point, got in zip(batch, decoded, strict=True)
                                if got != point]
                batches.append(points_from_wire(points_to_wire(decoded)))
        except InvalidEvent as error:
            self.record(Check("events decoded", False, f"refused: {error.reason}"))
            return None
        self.record(verdict("events decoded", differences,
                            f"{self.probe.written} Kafka messages through the bridge's decoding and the ingest "
                            "task's wire format"))
        return batches

    def _write(self, store: EventStore, batches: list[list[Point]]) -> None:
        conflicts: int | None = 0
        problems = []
        for batch in batches:
            try:
                found = store.write(batch)
            except StoreRejected as error:
                problems.append(f"the store refused {len(error.rejected)} events: {first_line(error)}")
                found = error.conflicts
            conflicts = None if found is None or conflicts is None else conflicts + found
        if conflicts:
            problems.append(f"{conflicts} events reported as reusing a stored id with other content "
                            "(a redelivery is no conflict)")
        self.record(verdict("events written", problems,
                            f"{self.probe.written} events in {len(batches)} batches through store.write, the "
                            f"second redelivering {self.probe.redelivered.event_id}"))

    def _duration(self, store: EventStore, run_state: PostgresRunState, duration: Duration, run: str) -> None:
        probe, name = self.probe, duration.name
        dois = probe.dois
        qualifying = [doi for doi in store.qualifying_dois(duration, probe.now_ns) if doi.startswith(probe.prefix)]
        expected = probe.qualifying(duration)
        self.record(verdict(f"qualifying DOIs {name}", list_differences("qualifying", qualifying, expected),
                            f"{len(expected)} of {len(dois)} probe DOIs have more than {duration.min_events} events"))

        got = store.trend_inputs(duration, probe.now_ns, dois)
        want = probe.reference(duration)
        in_span = sum(probe.in_span(duration).values())
        self.record(verdict(f"trend inputs {name}", aggregate_differences(dois, got, want),
                            f"{len(dois)} DOIs x ({_SUMS} sums + {duration.windows} windows), {in_span} events "
                            "in the span"))

        if not self.influx and day_rollup.serves(duration):
            self._through_rollup(duration, want, expected)

        got_rows, problems = _rows(dois, got, duration)
        want_rows, _ = _rows(dois, want, duration)
        self.record(verdict(f"trend rows {name}", problems or row_differences(got_rows, want_rows),
                            f"{len(got_rows)} rows x {len(TREND_COLUMNS)} columns"))

        if not got_rows:
            return
        run_state.stage_rows(run, got_rows)
        staged = self.scratch.staged_rows(run)
        self.record(verdict(f"staged rows {name}", row_differences(staged, got_rows),
                            f"{len(staged)} rows back from trending_staging (run {run})"))

    def _through_rollup(self, duration: Duration, want: Aggregates, expected: list[str]) -> None:
        """The same run through the day rollup (every probe DOI reading it), once the probe's
        days are rolled up: the path the `year` run takes for its busiest DOIs."""
        self.scratch.roll_up()
        rolled = open_store(self.settings.model_copy(update={"trend_rollup": True, "trend_rollup_min_events": 0}))
        try:
            probe = self.probe
            qualifying = [doi for doi in rolled.qualifying_dois(duration, probe.now_ns) if doi.startswith(probe.prefix)]
            got = rolled.trend_inputs(duration, probe.now_ns, probe.dois)
        finally:
            rolled.close()
        self.record(verdict(f"day rollup {duration.name}", list_differences("qualifying", qualifying, expected)
                            + aggregate_differences(probe.dois, got, want),
                            "qualifying DOIs and trend inputs read through the rolled-up days equal the events'"))

    def _remove(self, admin: InfluxAdmin | None, store: EventStore | None, run_state: PostgresRunState | None,
                *, raise_errors: bool) -> None:
        """Remove every trace; a failure is a FAIL line, and raised unless an error is already
        on its way (the first one is the one to report)."""
        # Connections first: an interrupted statement may have left a transaction open.
        for resource in (store, run_state):
            if resource is not None:
                with contextlib.suppress(Exception):
                    resource.close()
        try:
            removed, left = self.scratch.remove(self.runs)
            if admin is not None:
                removed.append(admin.delete_scratch())
        except Exception as error:
            reason = scrub(first_line(error), self.settings.secret_values())
            self.record(Check("probe removed", False, f"{type(error).__name__}: {reason}"))
            if raise_errors:
                raise
            return
        self.record(verdict("probe removed", left, ", ".join(removed)))


def _rows(dois: list[str], aggregates: Aggregates, duration: Duration) -> tuple[list[dict[str, Any]], list[str]]:
    try:
        return rows(dois, compute_trends(aggregates, duration)), []
    except ValueError as error:  # a NaN or a wrong shape from the store
        return [], [f"the trend math refused the inputs: {error}"]


@contextlib.contextmanager
def _handling(handler: Callable[[int, FrameType | None], None], *signums: int) -> Iterator[None]:
    """``handler`` for ``signums`` while the block runs (only the main thread may set one)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Ctrl-C or SIGTERM during the removal waits until it is done, then interrupts."""
    received: list[int] = []
    with _handling(lambda signum, frame: received.append(signum), signal.SIGINT, signal.SIGTERM):
        yield
    if received:
        raise KeyboardInterrupt(f"signal {received[0]} during the removal")
