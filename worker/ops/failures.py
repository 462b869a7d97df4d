"""How a failure ends an ``aggregator`` command: one or two lines and a ``sysexits`` code, so a
person or a restart policy tells a wrong setting (78) from an outage (69) (docs/deploying.md,
"Exit codes and errors"). Each library is imported only to classify its own error.
"""

from __future__ import annotations

from worker.config.settings import ConfigurationError, Settings
from worker.core.failures import (
    SERVICE_VARIABLES,
    ConfigError,
    OperatorError,
    ServiceUnavailable,
    TryLater,
    UsageError,
    first_line,
)
from worker.core.masking import scrub
from worker.ingest.errors import DeadLetterError, PublishError
from worker.store.base import StoreUnavailable

EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_CONFIG = 78

#: The exit code of each failure kind; anything else is a bug (70).
_EXIT_CODES: tuple[tuple[type[OperatorError], int], ...] = (
    (UsageError, EX_USAGE), (ConfigError, EX_CONFIG), (ServiceUnavailable, EX_UNAVAILABLE), (TryLater, EX_TEMPFAIL))


def exit_code(failure: OperatorError) -> int:
    """The ``sysexits`` code of a failure, chosen by its kind."""
    return next((code for kind, code in _EXIT_CODES if isinstance(failure, kind)), EX_SOFTWARE)


#: The service each library talks to: an error of it the branches of _classify leave is an outage.
_SERVICES = {"psycopg2": "PostgreSQL", "redis": "Redis", "kombu": "Redis", "confluent_kafka": "Kafka",
             "cimpl": "Kafka", "urllib3": "InfluxDB", "influxdb_client": "InfluxDB"}
_PG_CONFIG_HINTS = ("password authentication failed", "does not exist", "no pg_hba.conf entry",
                    "role", "authentication", "no password supplied")


def _address(settings: Settings | None, service: str) -> str:
    if settings is None:
        return f"(see {SERVICE_VARIABLES.get(service, 'the settings')})"
    return settings.addresses()[service]


def _kafka_error(error: BaseException) -> tuple[bool, str]:
    """(whether Kafka was unreachable, librdkafka's reason)."""
    from confluent_kafka import KafkaError

    kafka_error = error.args[0] if error.args else None
    if not isinstance(kafka_error, KafkaError):
        return False, first_line(error)
    return kafka_error.code() in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN,
                                  KafkaError._RESOLVE, KafkaError._MSG_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
                                  KafkaError.REQUEST_TIMED_OUT), first_line(kafka_error.str())


def classify(error: BaseException, settings: Settings | None) -> OperatorError:
    """The operator's view of ``error`` (secrets scrubbed from every line)."""
    result = _classify(error, settings)
    secrets = settings.secret_values() if settings is not None else []
    result.message = scrub(result.message, secrets)
    result.hint = scrub(result.hint, secrets) if result.hint else None
    return result


def _classify(error: BaseException, settings: Settings | None) -> OperatorError:
    if isinstance(error, OperatorError):
        return error
    if isinstance(error, ConfigurationError):
        first, *more = str(error.code).splitlines()
        return ConfigError("\n".join([first, *(f"  {line}" for line in more)]),
                           "Fix the variable(s) named above; .env.example documents each one.")
    module = type(error).__module__.split(".")[0]
    reason = first_line(error)
    if module == "psycopg2":
        import psycopg2

        if isinstance(error, psycopg2.OperationalError) and any(h in reason for h in _PG_CONFIG_HINTS):
            return ConfigError(f"PostgreSQL at {_address(settings, 'PostgreSQL')} refused the login: {reason}",
                               "Check the user and database name in POSTGRES_DSN and the password "
                               "(POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE).")
        if not isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError):
            return OperatorError(f"PostgreSQL refused a statement: {reason}",
                                 "Run with --debug for the details; if the schema is not the product's, "
                                 "run `aggregator setup`.")
    elif module in ("redis", "kombu"):
        import redis

        refused = isinstance(error, redis.ResponseError) and any(w in str(error) for w in ("NOAUTH", "WRONGPASS"))
        if refused or isinstance(error, redis.AuthenticationError):
            return ConfigError(f"Redis at {_address(settings, 'Redis')} refused the login: {reason}",
                               "Check the user in REDIS_URL and the password (REDIS_PASSWORD_FILE, or in REDIS_URL).")
    elif module in ("confluent_kafka", "cimpl"):
        unreachable, reason = _kafka_error(error)
        if not unreachable:
            return OperatorError(f"Kafka refused a request: {reason}", "Run with --debug for the details.")
    elif module in ("tweepy", "requests"):
        return _x_api(error, reason, settings)
    store = "InfluxDB" if settings is not None and settings.event_store == "influxdb" else "PostgreSQL"
    service = _SERVICES.get(module) or next((name for kind, name in ((PublishError, "Redis"), (
        DeadLetterError, "Kafka"), (StoreUnavailable, store)) if isinstance(error, kind)), None)
    if service is None:
        return OperatorError(f"unexpected error: {type(error).__name__}: {reason}",
                             "This is a bug: run again with --debug and report the traceback.")
    return ServiceUnavailable(service, _address(settings, service), reason)


def _x_api(error: BaseException, reason: str, settings: Settings | None) -> OperatorError:
    import tweepy

    address = (settings.x_api_base_url if settings is not None else None) or "https://api.twitter.com"
    if isinstance(error, tweepy.Unauthorized | tweepy.Forbidden):
        return ConfigError(f"the X API at {address} refused the post: {reason}",
                           "Check the X_* credentials and the app's permissions (a duplicate text is refused too).")
    if isinstance(error, tweepy.TooManyRequests | tweepy.TwitterServerError):
        return ServiceUnavailable("the X API", address, reason, "Try again later: nothing was posted.")
    if isinstance(error, tweepy.HTTPException):
        return OperatorError(f"the X API at {address} refused the post: {reason}", "Run with --debug for the details.")
    return ServiceUnavailable("the X API", address, reason,
                              "The outcome is unknown: check the account before clearing today's row in "
                              "morning_post, then run `aggregator post` again.")
