-- depends: 0002.trending
-- One row per UTC day the morning post was claimed: the guard against posting twice.
CREATE TABLE morning_post (
    day         date PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('posting', 'posted')),
    text        text NOT NULL,
    tweet_id    text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    posted_at   timestamptz
);
