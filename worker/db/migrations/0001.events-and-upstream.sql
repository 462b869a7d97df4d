-- The event store table owned by this product, and the upstream tables of SPEC §5
-- (owned by the pipeline that feeds Kafka; created only when absent so the product can run
-- standalone; an existing upstream schema is left untouched).

CREATE TABLE IF NOT EXISTS discussion_event (
    event_id              text PRIMARY KEY,
    doi                   text NOT NULL,
    time                  timestamptz NOT NULL,
    score                 double precision NOT NULL,
    sentiment_raw         double precision NOT NULL,
    followers             bigint NOT NULL,
    length                integer NOT NULL,
    questions             integer NOT NULL,
    exclamations          integer NOT NULL,
    bot_rating            double precision NOT NULL,
    contains_abstract_raw double precision NOT NULL,
    time_score            double precision NOT NULL,
    type_factor           double precision NOT NULL,
    user_score            double precision NOT NULL,
    content_score         double precision NOT NULL,
    ingested_at           timestamptz NOT NULL DEFAULT now()
);
-- Trend queries read one DOI's events in a time range; retention and qualification scan
-- by time.
CREATE INDEX IF NOT EXISTS discussion_event_doi_time ON discussion_event (doi, time);
CREATE INDEX IF NOT EXISTS discussion_event_time ON discussion_event (time);

CREATE TABLE IF NOT EXISTS publication (
    id               serial PRIMARY KEY,
    doi              text NOT NULL UNIQUE,
    type             text,
    pub_date         text,
    year             integer,
    publisher        text,
    citation_count   integer,
    title            text,
    normalized_title text,
    abstract         text,
    license          text
);

CREATE TABLE IF NOT EXISTS author (
    id              serial PRIMARY KEY,
    name            text NOT NULL,
    normalized_name text
);

CREATE TABLE IF NOT EXISTS publication_author (
    publication_doi text NOT NULL,
    author_id       integer NOT NULL,
    PRIMARY KEY (publication_doi, author_id)
);

CREATE TABLE IF NOT EXISTS discussion_data (
    id    serial PRIMARY KEY,
    value text NOT NULL,
    type  text NOT NULL,
    UNIQUE (value, type)
);

CREATE TABLE IF NOT EXISTS discussion_data_point (
    publication_doi          text NOT NULL,
    discussion_data_point_id integer NOT NULL,
    count                    integer NOT NULL DEFAULT 0,
    PRIMARY KEY (publication_doi, discussion_data_point_id)
);
