"""Flux of the queries the product sends to InfluxDB 2 (pure: strings in, strings out).

Values are spliced in as escaped literals, not query ``params``: InfluxDB OSS 2.x ignores
``params`` (only Cloud honours them). The escaping is therefore the security boundary; each
literal function emits only what libflux reads back verbatim, and the unit tests run every
builder through the real Flux compiler (``tests/support/flux_compiler.py``).

A chunk's DOIs are selected with an anchored regex, ``r.doi =~ /^(?:…)$/``, not
``contains()``: only comparisons with literals are pushed down to the storage engine
(resolved against the tag index), a function call makes it stream every series of the span.
The trend inputs are ONE query of three pipelines, each ending in ``yield`` (no ``join``),
each with its own literal ``from |> range |> filter`` so each stays pushable. Time ranges
are :mod:`worker.core.alignment`'s, to the second, as the PostgreSQL store's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from worker.core import alignment
from worker.core.durations import Duration

#: The events' measurement unless the layout says otherwise (amba's name).
MEASUREMENT = "trending"
COUNT_FIELD = "count"
SCORE_FIELD = "score"

#: Fields summed per DOI for the trend math: field -> name of the aggregate it feeds
#: (a field of ``worker.core.aggregates.Aggregates``).
SUM_FIELDS: dict[str, str] = {
    "count": "count",
    "score": "sum_score",
    "sentiment_raw": "sum_sentiment",
    "followers": "sum_followers",
    "contains_abstract_raw": "sum_abstract",
    "length": "sum_length",
    "questions": "sum_questions",
    "exclamations": "sum_exclamations",
    "bot_rating": "sum_bot_rating",
}

#: ``yield`` names of the trend-inputs query (the ``result`` column of each record).
RESULT_SUMS = "sums"
RESULT_DECAY = "decay"
RESULT_SERIES = "series"

#: Extra column added to rows whose nanosecond time the caller needs: the CSV the client
#: parses turns ``_time`` into a ``datetime`` with microseconds only.
TIME_NS_COLUMN = "time_ns"

#: A chunk is 200 DOIs (SPEC §7); the ceiling only guards against an unbounded regex.
MAX_DOIS_PER_QUERY = 2000

_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F]}
_STRING_ESCAPES = _CONTROLS | str.maketrans({"\\": "\\\\", '"': '\\"', "$": "\\x24", "\n": "\\n", "\r": "\\r",
                                             "\t": "\\t"})
_REGEX_ESCAPES = _CONTROLS | str.maketrans({c: "\\" + c for c in "\\.+*?()|[]{}^$/"})


def string_literal(value: str) -> str:
    """A Flux string literal whose parsed value is exactly ``value``: ``$`` is always
    ``\\x24`` (no ``${`` interpolation can start), control characters ``\\xHH``."""
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def regex_quote(value: str) -> str:
    """``value`` as a regex matching exactly itself, ready for a Flux ``/…/`` literal.

    RE2 (Go, which runs the regex) reads ``\\`` + punctuation as that character, like
    Python's ``re``. libflux turns ``\\/`` into ``/`` and ``\\xHH`` into the raw byte before
    the regex is compiled, so ``\\xHH`` is only used for control characters, which are
    literals in a regex anyway (never for a metacharacter).
    """
    return value.translate(_REGEX_ESCAPES)


def regex_set_literal(values: Sequence[str]) -> str:
    """A Flux regex literal matching exactly the given strings: ``/^(?:a|b)$/``."""
    if not values:
        raise ValueError("a regex set needs at least one value (an empty set matches nothing)")
    return "/^(?:" + "|".join(regex_quote(v) for v in values) + ")$/"


def time_literal(ns: int) -> str:
    """RFC 3339 time literal with all nine fractional digits (UTC)."""
    seconds, fraction = divmod(int(ns), alignment.NS_PER_S)
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"


def duration_literal(ns: int) -> str:
    """A duration literal in whole seconds when possible, else nanoseconds."""
    ns = int(ns)
    if ns % alignment.NS_PER_S == 0:
        return f"{ns // alignment.NS_PER_S}s"
    return f"{ns}ns"


def float_literal(value: float) -> str:
    """A Flux float literal: positional notation (no exponent), always with a point.

    The digits are Python's shortest round-trip representation, so the value is exact.
    """
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"Flux has no literal for {value!r}")
    text = format(Decimal(repr(value)), "f")
    if "." not in text:
        text += ".0"
    return text


def int_literal(value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an int, got {value!r}")
    return str(value)


def _source(bucket: str, start_ns: int, stop_ns: int, predicate: str) -> str:
    """``from |> range |> filter`` with a literal predicate (pushable to storage)."""
    if stop_ns <= start_ns:
        raise ValueError(f"empty time range: start {start_ns} >= stop {stop_ns}")
    return (
        f"from(bucket: {string_literal(bucket)})\n"
        f"    |> range(start: {time_literal(start_ns)}, stop: {time_literal(stop_ns)})\n"
        f"    |> filter(fn: (r) => {predicate})"
    )


def fields_predicate(fields: Sequence[str]) -> str:
    """``r._field`` is one of ``fields`` (the Flux of a query here and of the downsampling tasks)."""
    if len(fields) == 1:
        return f"r._field == {string_literal(fields[0])}"
    return "(" + " or ".join(f"r._field == {string_literal(f)}" for f in fields) + ")"


def measurement_predicate(measurement: str) -> str:
    return f"r._measurement == {string_literal(measurement)}"


def _dois_predicate(dois: Sequence[str]) -> str:
    if not dois:
        raise ValueError("no DOIs given")
    if len(dois) > MAX_DOIS_PER_QUERY:
        raise ValueError(f"{len(dois)} DOIs in one query; at most {MAX_DOIS_PER_QUERY}")
    return f"r.doi =~ {regex_set_literal(dois)}"


def count_per_doi_query(bucket: str, start_ns: int, stop_ns: int, measurement: str = MEASUREMENT) -> str:
    """Number of events per DOI with ``start_ns <= time < stop_ns`` (a pushed-down count)."""
    predicate = f"{measurement_predicate(measurement)} and {fields_predicate([COUNT_FIELD])}"
    return (
        _source(bucket, start_ns, stop_ns, predicate) + "\n"
        "    |> count()\n"
        '    |> keep(columns: ["doi", "_value"])\n'
    )


def qualifying_dois_query(bucket: str, duration: Duration, now_ns: int, measurement: str = MEASUREMENT) -> str:
    """DOIs with MORE than ``min_events`` events in the span (SPEC §3).

    The count is pushed down; the threshold runs on the server, so only the qualifying
    DOIs travel.
    """
    start, stop = alignment.span_range(duration, now_ns)
    predicate = f"{measurement_predicate(measurement)} and {fields_predicate([COUNT_FIELD])}"
    return (
        _source(bucket, start, stop, predicate) + "\n"
        "    |> count()\n"
        f"    |> filter(fn: (r) => r._value > {int_literal(duration.min_events)})\n"
        '    |> keep(columns: ["doi", "_value"])\n'
    )


def trend_inputs_query(bucket: str, duration: Duration, now_ns: int, dois: Sequence[str],
                       measurement: str = MEASUREMENT) -> str:
    """Per-DOI sums, decayed score, sum of ages and window series for a chunk of DOIs.

    Three results (the ``result`` column): ``sums`` (one row per DOI and field of
    :data:`SUM_FIELDS`, ``_field``/``_value``), ``decay`` (one row per DOI: ``decayed``,
    ``age``) and ``series`` (one row per DOI and window: ``time_ns`` = window end + 1s,
    ``_value`` = sum of score, 0.0 when empty).
    """
    start, stop = alignment.span_range(duration, now_ns)
    select = f"{measurement_predicate(measurement)} and {_dois_predicate(dois)}"
    score_only = f"{select} and {fields_predicate([SCORE_FIELD])}"
    series_start, series_stop, offset = alignment.series_range(duration, now_ns)
    return (
        'import "math"\n\n'
        f"nowNs = {int_literal(now_ns)}\n"
        f"gravity = {float_literal(duration.gravity)}\n\n"
        + _source(bucket, start, stop, f"{select} and {fields_predicate(list(SUM_FIELDS))}")
        + "\n"
        "    |> sum()\n"
        '    |> keep(columns: ["doi", "_field", "_value"])\n'
        f"    |> yield(name: {string_literal(RESULT_SUMS)})\n\n"
        + _source(bucket, start, stop, score_only)
        + "\n"
        "    |> reduce(\n"
        "        fn: (r, accumulator) => {\n"
        "            t = int(v: r._time)\n"
        "            age = float(v: nowNs - (t - t % 1000000000)) / 1000000000.0\n\n"
        "            return {\n"
        "                decayed: accumulator.decayed + r._value * math.exp(x: gravity * age),\n"
        "                age: accumulator.age + age,\n"
        "            }\n"
        "        },\n"
        "        identity: {decayed: 0.0, age: 0.0},\n"
        "    )\n"
        '    |> keep(columns: ["doi", "decayed", "age"])\n'
        f"    |> yield(name: {string_literal(RESULT_DECAY)})\n\n"
        + _source(bucket, series_start, series_stop, score_only)
        + "\n"
        "    |> aggregateWindow(\n"
        f"        every: {duration_literal(duration.window_s * alignment.NS_PER_S)},\n"
        f"        offset: {duration_literal(offset)},\n"
        "        fn: sum,\n"
        "        createEmpty: true,\n"
        '        timeSrc: "_stop",\n'
        "    )\n"
        '    |> fill(column: "_value", value: 0.0)\n'
        f"    |> map(fn: (r) => ({{r with {TIME_NS_COLUMN}: int(v: r._time)}}))\n"
        f'    |> keep(columns: ["doi", "{TIME_NS_COLUMN}", "_value"])\n'
        f"    |> yield(name: {string_literal(RESULT_SERIES)})\n"
    )
