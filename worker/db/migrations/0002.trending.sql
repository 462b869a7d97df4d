-- depends: 0001.events-and-upstream
-- The trend tables owned by this product (SPEC §4, §5).
--
-- Idempotent: amba's components create `trending` themselves (amba-event-stream's
-- SQLAlchemy models) when they start before the product, so nothing here assumes a table is
-- absent. Migration 0004 then brings whichever `trending` exists (amba's, or this file's)
-- to one shape and creates the materialized view `trending_covid_papers` (it used to be
-- created here; a database that applied this file before keeps its view until 0004
-- replaces it).

-- The current rows: one per (publication_doi, duration), replaced per duration in one
-- transaction by the run's finalize step.
CREATE TABLE IF NOT EXISTS trending (
    publication_doi      text NOT NULL,
    duration             text NOT NULL,
    score                double precision NOT NULL,
    count                integer NOT NULL,
    mean_sentiment       double precision NOT NULL,
    sum_followers        double precision NOT NULL,
    abstract_difference  double precision NOT NULL,
    mean_age             double precision NOT NULL,
    mean_length          double precision NOT NULL,
    mean_questions       double precision NOT NULL,
    mean_exclamations    double precision NOT NULL,
    mean_bot_rating      double precision NOT NULL,
    mean_score           double precision NOT NULL,
    stddev               double precision NOT NULL,
    ema                  double precision NOT NULL,
    kama                 double precision NOT NULL,
    ker                  double precision NOT NULL,
    projected_change     double precision NOT NULL,
    trending             double precision NOT NULL,
    mk_trend             text NOT NULL,
    mk_p                 double precision NOT NULL,
    run_id               text NOT NULL,
    calculated_at        timestamptz NOT NULL,
    PRIMARY KEY (publication_doi, duration)
);
CREATE INDEX IF NOT EXISTS trending_duration_score ON trending (duration, score DESC);

-- Every run's rows with the time of the calculation, for analysing trends over time.
CREATE TABLE IF NOT EXISTS trending_history (
    publication_doi      text NOT NULL,
    duration             text NOT NULL,
    score                double precision NOT NULL,
    count                integer NOT NULL,
    mean_sentiment       double precision NOT NULL,
    sum_followers        double precision NOT NULL,
    abstract_difference  double precision NOT NULL,
    mean_age             double precision NOT NULL,
    mean_length          double precision NOT NULL,
    mean_questions       double precision NOT NULL,
    mean_exclamations    double precision NOT NULL,
    mean_bot_rating      double precision NOT NULL,
    mean_score           double precision NOT NULL,
    stddev               double precision NOT NULL,
    ema                  double precision NOT NULL,
    kama                 double precision NOT NULL,
    ker                  double precision NOT NULL,
    projected_change     double precision NOT NULL,
    trending             double precision NOT NULL,
    mk_trend             text NOT NULL,
    mk_p                 double precision NOT NULL,
    run_id               text NOT NULL,
    calculated_at        timestamptz NOT NULL,
    PRIMARY KEY (duration, calculated_at, publication_doi)
);
CREATE INDEX IF NOT EXISTS trending_history_doi ON trending_history (publication_doi, duration, calculated_at);

-- Rows of runs in flight, written by the chunk subtasks; chord results stay small (a count)
-- and the finalize step moves the rows with INSERT ... SELECT inside PostgreSQL.
CREATE UNLOGGED TABLE IF NOT EXISTS trending_staging (
    run_id               text NOT NULL,
    publication_doi      text NOT NULL,
    score                double precision NOT NULL,
    count                integer NOT NULL,
    mean_sentiment       double precision NOT NULL,
    sum_followers        double precision NOT NULL,
    abstract_difference  double precision NOT NULL,
    mean_age             double precision NOT NULL,
    mean_length          double precision NOT NULL,
    mean_questions       double precision NOT NULL,
    mean_exclamations    double precision NOT NULL,
    mean_bot_rating      double precision NOT NULL,
    mean_score           double precision NOT NULL,
    stddev               double precision NOT NULL,
    ema                  double precision NOT NULL,
    kama                 double precision NOT NULL,
    ker                  double precision NOT NULL,
    projected_change     double precision NOT NULL,
    trending             double precision NOT NULL,
    mk_trend             text NOT NULL,
    mk_p                 double precision NOT NULL,
    PRIMARY KEY (run_id, publication_doi)
);

-- One row per run: what operators look at to see a run's story.
CREATE TABLE IF NOT EXISTS trend_run (
    run_id         text PRIMARY KEY,
    duration       text NOT NULL,
    calculated_at  timestamptz NOT NULL,  -- the run's "now"
    started_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    planned_at     timestamptz,           -- qualifying DOIs selected, chunks known
    finalize_at    timestamptz,           -- all chunks done, finalize began
    finished_at    timestamptz,           -- rows replaced (or run failed/superseded)
    refreshed_at   timestamptz,           -- trending_covid_papers refreshed
    status         text NOT NULL CHECK (status IN ('running', 'finalized', 'superseded', 'failed')),
    dois           integer,
    chunks         integer,
    rows_written   integer,
    error          text
);
CREATE INDEX IF NOT EXISTS trend_run_duration_started ON trend_run (duration, started_at DESC);

-- The calculation time of the rows currently in `trending`, per duration: an older run
-- that finishes late compares against it and changes nothing.
CREATE TABLE IF NOT EXISTS trending_state (
    duration       text PRIMARY KEY,
    calculated_at  timestamptz NOT NULL,
    run_id         text NOT NULL
);
