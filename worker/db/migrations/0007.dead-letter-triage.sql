-- depends: 0006.trend-run-autovacuum
-- The dead-letter triage log (`aggregator dlq replay|discard`, worker/ingest/triage_log.py):
-- one row per thing done to a letter of the dead-letter topic, never updated or deleted, so
-- nothing leaves the dead letters without a trace of who, when and why. A position's state
-- is its latest row (replayed, redeadlettered, parked, discarded; none = pending). Rows of
-- parked and discarded letters keep the record as it was on the topic, so the letter
-- outlives the topic's retention. In PostgreSQL rather than a topic: the log is queried by
-- position (the index below) and must not expire with a topic's retention.
CREATE TABLE dead_letter_triage (
    id               bigserial PRIMARY KEY,
    topic            text        NOT NULL,
    kafka_partition  integer     NOT NULL,
    kafka_offset     bigint      NOT NULL,
    state            text        NOT NULL CHECK (state IN ('replayed', 'redeadlettered', 'parked', 'discarded')),
    actor            text        NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    why              text        NOT NULL,
    reason_kind      text        NOT NULL,
    attempt          integer     NOT NULL,
    record           bytea
);
CREATE INDEX dead_letter_triage_position ON dead_letter_triage (topic, kafka_partition, kafka_offset, id DESC);
