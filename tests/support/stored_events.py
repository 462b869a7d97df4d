"""What an event store holds, read back event by event, for the store tests.

The product never reads single events (its reads are the trend aggregations), so these
readers live with the tests: PostgreSQL's table through SQL, InfluxDB's bucket through a
Flux query that ``tests/store/influx/test_flux.py`` compiles with the others.
"""

from __future__ import annotations

from contextlib import closing

import psycopg2
from influxdb_client.client.influxdb_client import InfluxDBClient

from worker.core.events import POINT_FIELDS, Point
from worker.core.influx_layout import Layout
from worker.store.influx import flux
from worker.store.postgres.trend_sql import ns_to_ts


def postgres_events(dsn: str, doi: str, start_ns: int, stop_ns: int) -> list[Point]:
    """The events of ``doi`` with ``start_ns <= time < stop_ns`` in ``discussion_event``, oldest first."""
    with closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
        cur.execute(f"""
            SELECT event_id, doi, (extract(epoch FROM time - to_timestamp(0)) * 1000000)::bigint * 1000,
                   {", ".join(POINT_FIELDS)}
            FROM discussion_event
            WHERE doi = %s AND time >= {ns_to_ts("%s")} AND time < {ns_to_ts("%s")}
            ORDER BY time, event_id""", (doi, start_ns, stop_ns))
        return [Point(*row) for row in cur.fetchall()]


def influx_events_query(bucket: str, doi: str, start_ns: int, stop_ns: int,
                        measurement: str = flux.MEASUREMENT) -> str:
    """One row per event of ``doi`` with ``start_ns <= time < stop_ns``: ``pivot`` joins a
    point's fields (they share its timestamp), ``time_ns`` carries the exact time."""
    return (
        f"from(bucket: {flux.string_literal(bucket)})\n"
        f"    |> range(start: {flux.time_literal(start_ns)}, stop: {flux.time_literal(stop_ns)})\n"
        f"    |> filter(fn: (r) => {flux.measurement_predicate(measurement)} and r.doi == {flux.string_literal(doi)})\n"
        '    |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
        f"    |> map(fn: (r) => ({{r with {flux.TIME_NS_COLUMN}: int(v: r._time)}}))\n"
        '    |> sort(columns: ["_time"])\n'
    )


def influx_events(client: InfluxDBClient, layout: Layout, doi: str, start_ns: int, stop_ns: int) -> list[Point]:
    """The events of ``doi`` in the layout's raw bucket, oldest first. InfluxDB keeps no
    event id (it is not a field of SPEC §2): each gets ``influxdb:<doi>@<time_ns>``."""
    source = influx_events_query(layout.events_bucket, doi, start_ns, stop_ns, layout.measurement)
    points = []
    for record in client.query_api().query_stream(source):
        values = record.values
        time_ns = int(values[flux.TIME_NS_COLUMN])
        points.append(Point(f"influxdb:{doi}@{time_ns}", str(values["doi"]), time_ns,
                            *(values[name] for name in POINT_FIELDS)))
    return points
