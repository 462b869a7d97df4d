-- depends: 0007.dead-letter-triage
-- The per-(DOI, UTC day) rollup of discussion_event (worker/store/postgres/rollup.py,
-- docs/trends.md "The day rollup"): a `year` run reads whole days from it and only the
-- edges of its span and windows from the raw events. Every column is a sum over the day's
-- events; x is an event's whole second minus the day's midpoint, so Σ x gives the ages and
-- Σ score·x^j the decayed score (worker/core/day_rollup.py).
CREATE TABLE event_rollup_day (
    doi              text NOT NULL,
    day              date NOT NULL,
    n                integer NOT NULL,
    sum_score        double precision NOT NULL,
    sum_sentiment    double precision NOT NULL,
    sum_followers    double precision NOT NULL,
    sum_abstract     double precision NOT NULL,
    sum_length       double precision NOT NULL,
    sum_questions    double precision NOT NULL,
    sum_exclamations double precision NOT NULL,
    sum_bot_rating   double precision NOT NULL,
    sum_x            double precision NOT NULL,
    score_x1         double precision NOT NULL,
    score_x2         double precision NOT NULL,
    score_x3         double precision NOT NULL,
    score_x4         double precision NOT NULL,
    score_x5         double precision NOT NULL,
    -- n in the key's index: a run asks each DOI's event count first (an index-only scan),
    -- and reads from the rollup only the DOIs with many events (trend_sql.py).
    PRIMARY KEY (doi, day) INCLUDE (n)
);
-- Rolling a day up again, and retention, find a day's rows by it.
CREATE INDEX event_rollup_day_day ON event_rollup_day (day);
-- Days whose rollup rows may differ from their events: every write marks the days of its
-- events, in its own transaction; rolling a day up removes its mark first, then reads the
-- events (so a write the rollup did not see leaves its mark). Runs read a marked day raw.
CREATE TABLE event_rollup_stale (
    day date PRIMARY KEY
);
-- The events already stored: every day from the oldest to the newest is marked, and
-- `aggregator setup` (or the maintenance task, hour by hour) rolls them up.
INSERT INTO event_rollup_stale (day)
SELECT generate_series((min(time) AT TIME ZONE 'UTC')::date, (max(time) AT TIME ZONE 'UTC')::date, interval '1 day')::date
FROM discussion_event
ON CONFLICT DO NOTHING;
