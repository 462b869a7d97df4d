"""Flux of the InfluxDB tasks that fill amba's duration buckets and ``numbers`` (pure).

Both kinds read the raw events (docs/amba.md). A downsample task writes the complete
windows of its last ``lookback``, its range cut on window boundaries (``date.truncate`` of
the scheduled time) so no window is written from part of its events. A numbers task adds
up the per-DOI sums the storage engine computes (pushed down) and writes one point per run.
"""

from __future__ import annotations

from worker.core.influx_layout import MEAN_FIELDS, PUB_COUNT_FIELD, SUM_FIELDS, Layout, TaskSpec
from worker.store.influx.flux import duration_literal, fields_predicate, measurement_predicate, string_literal

_NS_PER_S = 1_000_000_000


def _seconds(seconds: int) -> str:
    return duration_literal(seconds * _NS_PER_S)


def _header(task: TaskSpec, imports: tuple[str, ...]) -> str:
    lines = [f"import {string_literal(name)}" for name in imports]
    lines += [
        "",
        "option task = {",
        f"    name: {string_literal(task.name)},",
        f"    cron: {string_literal(task.cron)},",
        f"    offset: {_seconds(task.offset_s)},",
        "}",
        "",
    ]
    return "\n".join(lines) + "\n"


def _source(layout: Layout, fields: tuple[str, ...], start: str, stop: str | None = None) -> str:
    window = f"start: {start}" + (f", stop: {stop}" if stop else "")
    return (
        f"from(bucket: {string_literal(layout.events_bucket)})\n"
        f"    |> range({window})\n"
        f"    |> filter(fn: (r) => {measurement_predicate(layout.measurement)} and {fields_predicate(fields)})\n"
    )


def downsample_task(layout: Layout, task: TaskSpec) -> str:
    spec = layout.downsampling(task.duration)
    if spec.lookback_s % spec.window_s:
        raise ValueError(f"{task.name}: the lookback must be a whole number of windows")
    every = _seconds(spec.window_s)
    return (
        _header(task, ("date",))
        + f"stop = date.truncate(t: now(), unit: {every})\n"
        + f"start = date.sub(d: {_seconds(spec.lookback_s)}, from: stop)\n\n"
        + "sums = " + _source(layout, SUM_FIELDS, "start", "stop")
        + f"    |> aggregateWindow(every: {every}, fn: sum, createEmpty: false)\n"
        + "    |> map(fn: (r) => ({r with _value: float(v: r._value)}))\n\n"
        + "means = " + _source(layout, MEAN_FIELDS, "start", "stop")
        + f"    |> aggregateWindow(every: {every}, fn: mean, createEmpty: false)\n"
        + "    |> map(fn: (r) => ({r with _value: float(v: r._value)}))\n\n"
        + "union(tables: [sums, means])\n"
        + f"    |> to(bucket: {string_literal(task.writes)})\n"
    )


def numbers_task(layout: Layout, task: TaskSpec) -> str:
    span = _seconds(layout.durations[task.duration].span_s)
    means = ",\n".join(
        f"        {name}: if r.count > 0.0 then r.{name} / r.count else 0.0" for name in MEAN_FIELDS
    )
    sums = ",\n".join(f"        {name}: r.{name}" for name in (*SUM_FIELDS, PUB_COUNT_FIELD))
    return (
        _header(task, ("experimental",))
        + "sums = " + _source(layout, SUM_FIELDS + MEAN_FIELDS, f"-{span}")
        + "    |> sum()\n"
        + "    |> map(fn: (r) => ({r with _value: float(v: r._value)}))\n"
        + '    |> group(columns: ["_field"])\n'
        + "    |> sum()\n\n"
        + "dois = " + _source(layout, ("count",), f"-{span}")
        + "    |> count()\n"
        + "    |> group()\n"
        + "    |> count()\n"
        + f"    |> map(fn: (r) => ({{_field: {string_literal(PUB_COUNT_FIELD)}, _value: float(v: r._value)}}))\n\n"
        + "union(tables: [sums, dois])\n"
        + "    |> group()\n"
        + f"    |> map(fn: (r) => ({{_time: now(), _measurement: {string_literal(task.duration)}, "
        + "_field: r._field, _value: r._value}))\n"
        + '    |> pivot(rowKey: ["_time", "_measurement"], columnKey: ["_field"], valueColumn: "_value")\n'
        + "    |> map(fn: (r) => ({\n"
        + "        _time: r._time,\n"
        + "        _measurement: r._measurement,\n"
        + f"{sums},\n"
        + f"{means},\n"
        + "    }))\n"
        + '    |> group(columns: ["_measurement"])\n'
        + f"    |> experimental.to(bucket: {string_literal(task.writes)})\n"
    )


def task_flux(layout: Layout, task: TaskSpec) -> str:
    """The complete Flux of one of ``layout.tasks()``."""
    if task.kind == "downsample":
        return downsample_task(layout, task)
    return numbers_task(layout, task)
