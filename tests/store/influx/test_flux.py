"""Every Flux text the product sends passes the real Flux compiler (and the tests' reader of
stored events, ``tests/support/stored_events.py``); literals round-trip.

The compiler is libflux (wasm, run by node through ``tests/support/flux_compiler.py``); all sources
go through ONE node process per test session (module-scoped fixture), which keeps this
file at a couple of seconds.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.support.flux_compiler import FluxCompilerMissing, FluxResult, check_flux
from tests.support.stored_events import influx_events_query
from worker.core import alignment
from worker.core.durations import DEFAULT_DURATIONS, Duration, build_durations
from worker.core.influx_layout import MEAN_FIELDS, SUM_FIELDS, Layout, TaskSpec
from worker.store.influx import flux
from worker.store.influx.store import _fill_trend_inputs
from worker.store.influx.tasks import task_flux

pytestmark = pytest.mark.unit

NOW_NS = 1_620_131_696_000_000_000  # a run's time is a whole second (worker.core.alignment)
LAYOUTS = (
    Layout.of(measurement="trending", events_bucket="currently", events_retention_days=400, prefix="",
              durations=build_durations()),
    Layout.of(measurement='m "$x"', events_bucket='my "events" $bucket', events_retention_days=0,
              prefix="odd.prefix-", durations=build_durations()),
)
BUCKET = "discussions"

AWKWARD_DOIS: list[str] = [
    "10.1101/2021.04.01.123456",
    "10.1000/xyz(123)abc",
    '10.1000/quote"in"doi',
    "10.1000/back\\slash",
    "10.1000/dollar${injected}",
    "10.1000/$\\\"",
    "10.1000/a b,c=d",
    "10.1000/é-ünïcode-漢字",
    "10.1000/new\nline\ttab\rcr",
    "10.1000/[brackets]{braces}^$.*+?|",
    '") |> drop(columns: ["doi"]) //',
    "10.1000/ctrl\x01\x7f",
    "10.1000/\\/slashes//",
]


def _sources() -> dict[str, str]:
    sources: dict[str, str] = {}
    for i, doi in enumerate(AWKWARD_DOIS):
        sources[f"stored_events[{i}]"] = influx_events_query(BUCKET, doi, NOW_NS - 10**12, NOW_NS)
    sources["count_per_doi"] = flux.count_per_doi_query(BUCKET, 0, NOW_NS)
    chunk = [f"10.5555/chunk.{i}" for i in range(200)]
    for duration in DEFAULT_DURATIONS:
        sources[f"qualifying[{duration.name}]"] = flux.qualifying_dois_query(
            BUCKET, duration, NOW_NS
        )
        sources[f"trend_inputs[{duration.name},awkward]"] = flux.trend_inputs_query(
            BUCKET, duration, NOW_NS, AWKWARD_DOIS
        )
        sources[f"trend_inputs[{duration.name},200]"] = flux.trend_inputs_query(
            BUCKET, duration, NOW_NS, chunk
        )
    sources["stored_events[odd measurement]"] = influx_events_query(BUCKET, "d", 0, NOW_NS, 'm "$x"')
    for layout in LAYOUTS:
        for task in layout.tasks():
            sources[f"task[{layout.prefix}{task.name}]"] = task_flux(layout, task)
    return sources


SOURCES = _sources()


@pytest.fixture(scope="module")
def compiled() -> dict[str, FluxResult]:
    names = list(SOURCES)
    return dict(zip(names, check_flux([SOURCES[n] for n in names]), strict=True))


# --------------------------------------------------------------------------- the check itself


def test_the_compiler_rejects_an_unknown_function_and_a_wrong_argument_type() -> None:
    unknown, wrong_type, both, fine = check_flux(
        [
            'from(bucket: "b") |> range(start: -1h) |> frobnicate()',
            "from(bucket: 42) |> range(start: -1h)",
            'import "math"\nfrom(bucket: 1) |> range(start: -1h) |> nosuch(x: math.exp(x: "e"))',
            'from(bucket: "b") |> range(start: -1h)',
        ]
    )
    assert not unknown.valid
    assert any("frobnicate" in e for e in unknown.errors), unknown.errors
    assert not wrong_type.valid
    assert any("expected string but found int" in e for e in wrong_type.errors), wrong_type.errors
    assert not both.valid and len(both.errors) >= 2, both.errors
    assert fine.valid and fine.errors == []


def test_a_syntax_error_is_invalid() -> None:
    (result,) = check_flux(['x = "unterminated'])
    assert not result.valid and result.errors


def test_missing_node_is_an_error_not_a_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.support.flux_compiler.shutil.which", lambda _name: None)
    with pytest.raises(FluxCompilerMissing, match="npm ci --prefix tests/fluxcheck"):
        check_flux(["x = 1"])


# --------------------------------------------------------------------------- every builder


@pytest.mark.parametrize("name", list(SOURCES))
def test_every_flux_text_compiles(name: str, compiled: dict[str, FluxResult]) -> None:
    result = compiled[name]
    assert result.valid, f"{name}: {result.errors}\n{SOURCES[name]}"


@pytest.mark.parametrize("index", range(len(AWKWARD_DOIS)))
def test_doi_reaches_the_parser_verbatim(index: int, compiled: dict[str, FluxResult]) -> None:
    assert AWKWARD_DOIS[index] in compiled[f"stored_events[{index}]"].strings


@pytest.mark.parametrize("duration", DEFAULT_DURATIONS, ids=lambda d: d.name)
def test_doi_regex_matches_exactly_the_chunk(
    duration: Duration, compiled: dict[str, FluxResult]
) -> None:
    regexes = compiled[f"trend_inputs[{duration.name},awkward]"].regexes
    assert len(regexes) == 3  # one literal filter per pipeline, so each is pushable
    assert len(set(regexes)) == 1
    # The parser's value is what RE2 compiles; Python's re reads these escapes the same way.
    pattern = re.compile(regexes[0])
    for doi in AWKWARD_DOIS:
        assert pattern.fullmatch(doi), doi
        assert not pattern.fullmatch(doi + "x")
        assert not pattern.fullmatch("x" + doi)
        if "." in doi:
            assert not pattern.fullmatch(doi.replace(".", "X"))
    assert not pattern.fullmatch("")


@pytest.mark.parametrize("layout", LAYOUTS, ids=["amba", "odd"])
def test_tasks_declare_their_name_and_schedule_and_write_where_the_layout_says(
    layout: Layout, compiled: dict[str, FluxResult]
) -> None:
    for task in layout.tasks():
        result = compiled[f"task[{layout.prefix}{task.name}]"]
        # The parser's values: names and buckets arrive verbatim, whatever they contain.
        assert {task.name, task.cron, layout.events_bucket, task.writes, layout.measurement} <= set(result.strings)
        assert f"    offset: {task.offset_s}s,\n" in SOURCES[f"task[{layout.prefix}{task.name}]"]


@pytest.mark.parametrize("task", LAYOUTS[0].tasks(), ids=lambda t: t.name)
def test_tasks_read_the_raw_events_and_write_amba_fields(task: TaskSpec, compiled: dict[str, FluxResult]) -> None:
    strings = set(compiled[f"task[{task.name}]"].strings)
    assert {"currently", "trending"} <= strings  # never another task's output: no cascade
    assert set(SUM_FIELDS) | set(MEAN_FIELDS) <= strings
    text = SOURCES[f"task[{task.name}]"]
    if task.kind == "downsample":
        spec = LAYOUTS[0].downsampling(task.duration)
        every = f"{spec.window_s}s"
        assert f"stop = date.truncate(t: now(), unit: {every})" in text  # complete windows only
        assert f"start = date.sub(d: {spec.lookback_s}s, from: stop)" in text
        assert text.count(f"aggregateWindow(every: {every}, fn: ") == 2
    else:
        assert f"range(start: -{LAYOUTS[0].durations[task.duration].span_s}s)" in text
        assert "pub_count" in strings and "experimental.to(" in text


def test_queries_use_no_join_and_push_down() -> None:
    text = SOURCES["trend_inputs[year,200]"]
    assert "join" not in text
    assert "contains(" not in text
    assert text.count("yield(") == 3
    assert "aggregateWindow(" in text and "createEmpty: true" in text


# --------------------------------------------------------------------------- literals

TRICKY_STRINGS = [
    "",
    "plain",
    "$",
    "${x}",
    "$${",
    "\\${",
    '$\\"',
    "$\\",
    '"',
    "\\",
    "\\\\\\",
    "a\nb\rc\td",
    "\x00\x01\x1f\x7f",
    "é漢字🙂",
    "\u2028\u0085",
    "\\x41",
    '"${"',
]


def test_string_literals_round_trip_through_the_parser() -> None:
    sources = [f"x = {flux.string_literal(s)}" for s in TRICKY_STRINGS]
    for text, result, expected in zip(sources, check_flux(sources), TRICKY_STRINGS, strict=True):
        assert result.valid, (text, result.errors)
        assert result.strings == [expected], text


def test_string_literal_never_contains_a_raw_dollar_or_control_character() -> None:
    for s in TRICKY_STRINGS:
        body = flux.string_literal(s)[1:-1]
        assert "$" not in body
        assert all(ord(c) >= 0x20 and ord(c) != 0x7F for c in body)


def test_regex_quote() -> None:
    assert flux.regex_quote("10.1/a(b)") == "10\\.1\\/a\\(b\\)"
    assert flux.regex_quote("x\ny") == "x\\x0ay"
    assert flux.regex_set_literal(["a", "b.c"]) == "/^(?:a|b\\.c)$/"
    with pytest.raises(ValueError):
        flux.regex_set_literal([])


def test_time_literal() -> None:
    assert flux.time_literal(NOW_NS) == "2021-05-04T12:34:56.000000000Z"
    assert flux.time_literal(NOW_NS + 123_456_789) == "2021-05-04T12:34:56.123456789Z"
    assert flux.time_literal(0) == "1970-01-01T00:00:00.000000000Z"
    assert flux.time_literal(1) == "1970-01-01T00:00:00.000000001Z"


def test_duration_literal() -> None:
    assert flux.duration_literal(360 * 10**9) == "360s"
    assert flux.duration_literal(1) == "1ns"
    assert flux.duration_literal(0) == "0s"


@pytest.mark.parametrize(
    "value", [-0.00036, -0.00000357142857, -0.000000833333333, 1e-20, 1e20, 0.1, -2.0, 0.0]
)
def test_float_literal_is_positional_and_exact(value: float) -> None:
    text = flux.float_literal(value)
    assert "e" not in text.lower() and "." in text
    assert float(text) == value


def test_float_literal_refuses_non_finite() -> None:
    with pytest.raises(ValueError):
        flux.float_literal(float("nan"))


def test_int_literal_refuses_bool_and_float() -> None:
    assert flux.int_literal(30) == "30"
    with pytest.raises(TypeError):
        flux.int_literal(True)
    with pytest.raises(TypeError):
        flux.int_literal(3.0)  # type: ignore[arg-type]


def test_builders_refuse_bad_input() -> None:
    with pytest.raises(ValueError):
        flux.count_per_doi_query(BUCKET, 10, 10)
    with pytest.raises(ValueError):
        flux.trend_inputs_query(BUCKET, DEFAULT_DURATIONS[0], NOW_NS, [])
    with pytest.raises(ValueError):
        flux.trend_inputs_query(
            BUCKET, DEFAULT_DURATIONS[0], NOW_NS, ["d"] * (flux.MAX_DOIS_PER_QUERY + 1)
        )


def test_qualifying_means_more_than_min_events() -> None:
    duration = DEFAULT_DURATIONS[1]
    assert f"r._value > {duration.min_events})" in flux.qualifying_dois_query(
        BUCKET, duration, NOW_NS
    )


def test_span_range_is_the_alignments() -> None:
    duration = DEFAULT_DURATIONS[0]
    start, stop = alignment.span_range(duration, NOW_NS)
    assert stop == NOW_NS + 10**9  # the whole second of `now` is in
    expected = f"range(start: {flux.time_literal(start)}, stop: {flux.time_literal(stop)})"
    assert expected in flux.qualifying_dois_query(BUCKET, duration, NOW_NS)
    assert expected in flux.trend_inputs_query(BUCKET, duration, NOW_NS, ["d"])


def test_decay_ages_use_the_events_whole_second() -> None:
    text = flux.trend_inputs_query(BUCKET, DEFAULT_DURATIONS[0], NOW_NS, ["d"])
    assert "age = float(v: nowNs - (t - t % 1000000000)) / 1000000000.0" in text


# --------------------------------------------------------------------------- trend inputs
# Which window an event lands in, at every edge, is tests/core/test_alignment.py.


class _Record:
    """Just what _fill_trend_inputs reads of an influxdb_client FluxRecord."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values


def test_sums_and_decay_results_fill_the_aggregates() -> None:
    duration = DEFAULT_DURATIONS[0]
    records = [
        _Record({"result": "sums", "doi": "b", "_field": "count", "_value": 3}),
        _Record({"result": "sums", "doi": "b", "_field": "score", "_value": 7.5}),
        _Record({"result": "sums", "doi": "b", "_field": "followers", "_value": 12}),
        _Record({"result": "sums", "doi": "zzz-not-asked", "_field": "count", "_value": 9}),
        _Record({"result": "decay", "doi": "b", "decayed": 5.25, "age": 100.0}),
    ]
    names = (*flux.SUM_FIELDS.values(), "decayed_score", "sum_age")
    sums = {name: np.zeros(2) for name in names}
    series = np.zeros((2, duration.windows))
    _fill_trend_inputs(records, {"a": 0, "b": 1}, duration, NOW_NS, sums, series)  # type: ignore[arg-type]
    assert sums["count"].tolist() == [0.0, 3.0]
    assert sums["sum_score"].tolist() == [0.0, 7.5]
    assert sums["sum_followers"].tolist() == [0.0, 12.0]
    assert sums["decayed_score"].tolist() == [0.0, 5.25]
    assert sums["sum_age"].tolist() == [0.0, 100.0]
    assert not series.any()
