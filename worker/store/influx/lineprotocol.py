"""InfluxDB line protocol for the events and the trend rows (pure: values in, text out).

InfluxDB keys a point by (measurement, tags, timestamp) and the only tag is ``doi``, so the
timestamp carries the identity: the event's second plus ``blake2b(event id) mod 1e9`` ns
(:func:`event_timestamp_ns`). A redelivered event overwrites itself; two events of one DOI
in one second collide with probability 1e-9 per pair; the trend queries count whole
seconds only (:mod:`worker.core.alignment`), so the offset moves no event across an edge.
Every field has a fixed type whatever the Python value is: InfluxDB refuses a field's
other type after its first write to a shard (HTTP 422).
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Mapping, Sequence

import msgspec
import msgspec.inspect

from worker.core.events import INT64_MAX, INT64_MIN, POINT_FIELDS, Point
from worker.core.influx_layout import TREND_FIELDS, FieldKind

COUNT_FIELD = "count"

_NS_PER_S = 1_000_000_000

# The integer fields, from Point itself (type_info: they are Annotated[int, Meta]).
INT_FIELDS = frozenset(
    f.name for f in msgspec.structs.fields(Point)
    if f.name in POINT_FIELDS and isinstance(msgspec.inspect.type_info(f.type), msgspec.inspect.IntType)
)


class UnrepresentableValue(ValueError):
    """A tag or field value that line protocol cannot carry faithfully."""


def event_timestamp_ns(point: Point) -> int:
    """The stored timestamp: the event's second plus a stable per-event offset (< 1 s);
    blake2b, not the per-process salted ``hash()``."""
    digest = hashlib.blake2b(point.event_id.encode("utf-8"), digest_size=8).digest()
    offset = int.from_bytes(digest, "big") % _NS_PER_S
    return point.time_ns - point.time_ns % _NS_PER_S + offset


def escape_tag_value(value: str) -> str:
    """Escape a tag value (or tag/field key): ``,``, ``=`` and space get a backslash.

    InfluxDB 2's parser unescapes only ``\\,``, ``\\=`` and ``\\ `` in tags; a backslash
    elsewhere is a literal. A value whose backslash precedes one of those characters, a
    backslash or the end (where the following separator would become an escaped space)
    has no unambiguous encoding, nor has a newline: such values are refused.
    """
    if not value:
        raise UnrepresentableValue("empty tag value")
    if "\n" in value or "\r" in value:
        raise UnrepresentableValue(f"tag value {value!r} contains a line break")
    if value.endswith("\\") or any(
        value[i] == "\\" and value[i + 1] in "\\,= " for i in range(len(value) - 1)
    ):
        raise UnrepresentableValue(f"tag value {value!r} has a backslash line protocol eats")
    return value.replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_measurement(value: str) -> str:
    """A measurement name: ``,`` and space get a backslash (``=`` is literal there)."""
    if not value or "\n" in value or "\r" in value or "\\" in value:
        raise UnrepresentableValue(f"measurement {value!r} cannot be written")
    return value.replace(",", "\\,").replace(" ", "\\ ")


def float_value(name: str, value: float) -> str:
    number = float(value)
    if not math.isfinite(number):
        raise UnrepresentableValue(f"field {name} is {number!r}; InfluxDB stores finite floats")
    return repr(number)


def int_value(name: str, value: int) -> str:
    number = int(value)
    if not INT64_MIN <= number <= INT64_MAX:
        raise UnrepresentableValue(f"field {name} = {number} does not fit an int64")
    return f"{number}i"


def string_value(name: str, value: str) -> str:
    if "\n" in value or "\r" in value:
        raise UnrepresentableValue(f"field {name} contains a line break")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def point_line(point: Point, measurement: str) -> str:
    """One event: ``<measurement>,doi=… <12 fields>,count=1i <timestamp>``."""
    fields = [f"{name}={(int_value if name in INT_FIELDS else float_value)(name, getattr(point, name))}"
              for name in POINT_FIELDS]
    fields.append(f"{COUNT_FIELD}=1i")
    return (
        f"{escape_measurement(measurement)},doi={escape_tag_value(point.doi)} "
        f"{','.join(fields)} {event_timestamp_ns(point)}"
    )


def _typed(kind: FieldKind, name: str, value: object) -> str | None:
    """A field value of a fixed type, or ``None`` to leave the field out (``None``, NaN:
    InfluxDB has no null and refuses NaN)."""
    if value is None:
        return None
    if kind == "string":
        return string_value(name, str(value))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UnrepresentableValue(f"trend field {name} = {value!r} is not a number")
    if not math.isfinite(float(value)):
        return None
    if kind == "int":
        return int_value(name, round(float(value)))
    return float_value(name, float(value))


def trend_lines(measurement: str, calculated_at_ns: int, rows: Sequence[Mapping[str, object]]) -> list[str]:
    """A run's trend rows for ``trending_<duration>``: tag ``doi``, the fields and types of
    ``TREND_FIELDS``, all at the run's time (rewriting a run overwrites it). Columns that
    are not trend fields are left out; so is a row without any field."""
    prefix = escape_measurement(measurement)
    lines = []
    for row in rows:
        doi = row.get("doi", row.get("publication_doi"))
        if not isinstance(doi, str):
            raise UnrepresentableValue(f"trend row without a doi: {row!r}")
        fields = [f"{field}={value}" for column, (field, kind) in TREND_FIELDS.items()
                  if (value := _typed(kind, field, row.get(column))) is not None]
        if fields:
            lines.append(f"{prefix},doi={escape_tag_value(doi)} {','.join(fields)} {int(calculated_at_ns)}")
    return lines
