"""What amba's streams API reads from the product, kept as data for the contract tests.

Source: the public repository ``ambalytics/amba-analysis-streams-api`` at commit
``d6f6abf9f1f82b478b62cf4ecf023036b8a0782f``: ``app/daos/publication.py``,
``app/daos/stats.py``, ``app/daos/author.py``, ``app/daos/field_of_study.py``. The API is
not ours and does not change with us, so these are its reads as it runs them: the tables,
views, columns (unqualified where it leaves them unqualified: a column the product adds
must not make them ambiguous), InfluxDB buckets, measurements and fields. The SQL runs
through SQLAlchemy 1.4 ``text()`` and a session, as the API does.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- PostgreSQL

_TREND_COLUMNS = ("t.score, count, mean_sentiment, sum_followers, abstract_difference, mean_age, mean_length, "
                  "mean_questions, mean_exclamations, mean_bot_rating, projected_change, trending, ema, kama, ker, "
                  "mean_score, stddev")
_AGGREGATED = ("count(t.publication_doi) as pub_count, SUM(t.score) as score, SUM(count) as count, "
               "AVG(mean_sentiment) as mean_sentiment, SUM(sum_followers) as sum_followers, "
               "AVG(abstract_difference) as abstract_difference, AVG(mean_age) as mean_age, "
               "AVG(mean_length) as mean_length, AVG(mean_questions) as mean_questions, "
               "AVG(mean_exclamations) as mean_exclamations, AVG(mean_bot_rating) as mean_bot_rating, "
               "AVG(projected_change) as projected_change, AVG(trending) as trending, AVG(ema) as ema, "
               "AVG(kama) as kama, AVG(ker) as ker, AVG(mean_score) as mean_score, AVG(stddev) as stddev")

#: name (the API function) -> SQL with the API's bind parameters. Each returns rows when
#: `trending` holds rows of the duration for a publication (and, for the COVID view, one
#: with COVID-19 among its top entities).
SQL_READS: dict[str, str] = {
    "publication.get_trending_publications": (
        "SELECT ROW_NUMBER () OVER (ORDER BY score DESC) as trending_ranking, p.*, " + _TREND_COLUMNS +
        ", count(*) OVER() AS total_count FROM trending t JOIN publication p on p.doi = t.publication_doi "
        "WHERE duration = :duration ORDER BY score DESC LIMIT :limit OFFSET :offset"),
    "publication.get_trending_publications(search, sort by year)": (
        "SELECT ROW_NUMBER () OVER (ORDER BY score DESC) as trending_ranking, p.*, " + _TREND_COLUMNS +
        ", count(*) OVER() AS total_count FROM trending t JOIN publication p on p.doi = t.publication_doi "
        "WHERE duration = :duration AND p.title ILIKE :search ORDER BY year DESC LIMIT :limit OFFSET :offset"),
    "publication.get_trending_covid_publications": (
        "SELECT *, count(*) OVER() AS total_count FROM trending_covid_papers WHERE duration = :duration "
        "AND title ILIKE :search ORDER BY trending_ranking ASC LIMIT :limit OFFSET :offset"),
    "publication.get_trending_covid_publications(sort by citation_count)": (
        "SELECT *, count(*) OVER() AS total_count FROM trending_covid_papers WHERE duration = :duration "
        "ORDER BY citation_count DESC LIMIT :limit OFFSET :offset"),
    "publication.retrieve_publication(rank)": (
        "SELECT trending_ranking FROM (SELECT ROW_NUMBER() OVER (ORDER BY score DESC) as trending_ranking, "
        "publication_doi FROM trending t WHERE duration = :duration) t WHERE publication_doi = :doi"),
    "stats.get_top_n_trending_dois": (
        "SELECT publication_doi FROM trending t WHERE duration = :duration ORDER BY score DESC LIMIT :limit"),
    "stats.get_profile_information_avg": (
        "SELECT 'mean_score' as type, MIN(mean_score), MAX(mean_score), AVG(mean_score) FROM trending "
        "WHERE duration = :duration UNION "
        "SELECT 'sum_followers' as type, MIN(sum_followers), MAX(sum_followers), AVG(sum_followers) FROM trending "
        "WHERE duration = :duration"),
    "stats.get_profile_information_for_doi": (
        "SELECT AVG(mean_score) mean_score, AVG(abstract_difference) abstract_difference, "
        "AVG(mean_sentiment) mean_sentiment, SUM(sum_followers) sum_followers, AVG(mean_length) mean_length, "
        "AVG(mean_questions) mean_questions, AVG(mean_exclamations) mean_exclamations, "
        "AVG(mean_bot_rating) mean_bot_rating FROM (SELECT DISTINCT doi, mean_score, abstract_difference, "
        "mean_sentiment, sum_followers, mean_length, mean_questions, mean_exclamations, mean_bot_rating "
        "FROM trending t LEFT JOIN publication p on p.doi = t.publication_doi "
        "LEFT JOIN publication_field_of_study pfos on p.doi = pfos.publication_doi "
        "LEFT JOIN publication_author pa on p.doi = pa.publication_doi "
        "WHERE duration = :duration AND doi = :doi) t"),
    "stats.get_dois_for_author": (
        "SELECT t.publication_doi FROM trending t JOIN publication_author pa on t.publication_doi = pa.publication_doi "
        "WHERE duration = :duration AND pa.author_id = :author_id"),
    "author.get_trending_authors": (
        "SELECT ROW_NUMBER () OVER (ORDER BY score DESC) as trending_ranking, *, count(*) OVER() AS total_count "
        "FROM (SELECT a.id, a.name, " + _AGGREGATED + " FROM trending t "
        "JOIN publication p on p.doi = t.publication_doi JOIN publication_author pa on p.doi = pa.publication_doi "
        "JOIN author a on a.id = pa.author_id WHERE duration = :duration GROUP BY a.id) t "
        "ORDER BY score DESC LIMIT :limit OFFSET :offset"),
}

#: Columns the API names in ``trending_covid_papers`` (its filters, sort keys, and the
#: columns of the original aggregator's view that ``SELECT *`` hands to its clients).
COVID_VIEW_COLUMNS = frozenset({
    "trending_ranking", "doi", "pub_date", "year", "citation_count", "title", "publication_doi", "duration",
    "score", "count", "mean_sentiment", "sum_followers", "abstract_difference", "mean_age", "mean_length",
    "mean_questions", "mean_exclamations", "mean_bot_rating", "projected_change", "trending", "ema", "kama", "ker",
    "mean_score", "stddev",
})

# --------------------------------------------------------------------------- InfluxDB

MEASUREMENT = "trending"
DURATIONS = ("currently", "today", "week", "month", "year")

#: Buckets read per duration (``trending_time_definition[duration]['name']``): raw events
#: for `currently`, downsampled windows for the others; tag ``doi``. The API sums
#: ``score``, ``followers`` and (except for `currently`, where it counts ``score`` rows)
#: ``count``, and averages the rest (``get_number_influx``, ``get_window_chart_data``).
DURATION_BUCKET_FIELDS = frozenset({
    "score", "count", "followers", "sentiment_raw", "contains_abstract_raw", "questions", "exclamations", "length",
    "bot_rating",
})

#: ``trending_<duration>`` (``get_trending_chart_data``): one point per run and DOI, tag
#: ``doi``; note ``sum_follower`` (the API renames ``sum_followers`` before it queries).
TREND_BUCKET_FIELDS = frozenset({
    "score", "count", "mean_sentiment", "sum_follower", "abstract_difference", "mean_age", "mean_length",
    "mean_questions", "mean_exclamations", "mean_bot_rating", "projected_change", "trending", "ema", "kama", "ker",
    "mean_score", "stddev",
})

#: ``numbers`` (``get_task_number_influx``): measurement = the duration, the last value of
#: each field within the duration.
NUMBERS_BUCKET = "numbers"
NUMBERS_FIELDS = frozenset({
    "bot_rating", "contains_abstract_raw", "exclamations", "followers", "length", "questions", "score",
    "sentiment_raw", "pub_count", "count",
})


def trend_bucket(duration: str) -> str:
    return f"trending_{duration}"


#: How far back the API reads each duration (``trending_time_definition[...]['duration']``).
SPAN = {"currently": "-6h", "today": "-24h", "week": "-7d", "month": "-30d", "year": "-365d"}


def flux_reads(duration: str, doi: str, *, duration_bucket: str | None = None, trends_bucket: str | None = None,
               numbers_bucket: str = NUMBERS_BUCKET) -> dict[str, str]:
    """Three of the API's Flux reads for one duration and DOI, as it sends them (its
    parameters spliced in); the bucket names can be a test's own."""
    bucket = duration_bucket or duration
    trends = trends_bucket or trend_bucket(duration)
    doi_filter = f'|> filter(fn: (r) => r["doi"] == "{doi}")'
    span = SPAN[duration]
    return {
        # get_number_influx(dois=[doi], field="score"): per-DOI sum over the duration.
        "get_number_influx": (
            f'from(bucket: "{bucket}") |> range(start: {span}, stop: now()) '
            f'|> filter(fn: (r) => r["_measurement"] == "{MEASUREMENT}") '
            f'|> filter(fn: (r) => r["_field"] == "score") {doi_filter} |> group() |> sum() '
            '|> keep(columns: ["_value", "_time", "doi"])'),
        # get_trending_chart_data(field="sum_followers"): the API asks for `sum_follower`.
        "get_trending_chart_data": (
            f'from(bucket: "{trends}") |> range(start: {span}) '
            f'|> filter(fn: (r) => r["_measurement"] == "{MEASUREMENT}") '
            f'|> filter(fn: (r) => r["_field"] == "sum_follower") {doi_filter} '
            '|> keep(columns: ["_value", "_time", "_field", "doi"])'),
        # get_task_number_influx(field="pub_count"): the numbers task's last value.
        "get_task_number_influx": (
            f'from(bucket: "{numbers_bucket}") |> range(start: {span}, stop: now()) '
            f'|> filter(fn: (r) => r["_measurement"] == "{duration}") '
            '|> filter(fn: (r) => r["_field"] == "pub_count") |> last() '
            '|> keep(columns: ["_value", "_time", "doi"])'),
    }
