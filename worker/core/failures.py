"""Failures an operator can act on (a setting, a service that did not answer, "not now"), by
kind: the process that reports one chooses what follows (the ``aggregator`` command maps kinds
to ``sysexits`` codes in :mod:`worker.ops.failures`; a Celery task logs and skips or retries).
"""

from __future__ import annotations

#: The variable an operator changes to point the product at each service.
SERVICE_VARIABLES = {
    "PostgreSQL": "POSTGRES_DSN",
    "Redis": "REDIS_URL",
    "Kafka": "KAFKA_BOOTSTRAP_SERVERS",
    "InfluxDB": "INFLUXDB_V2_URL",
}


class OperatorError(Exception):
    """A failure with the text an operator reads (a bug, unless a subclass says otherwise)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def lines(self) -> list[str]:
        return [self.message] + ([self.hint] if self.hint else [])


class UsageError(OperatorError):
    """The request is wrong (an argument, a name that does not exist)."""


class ConfigError(OperatorError):
    """A setting is wrong; retrying will not help until it is fixed."""


class TryLater(OperatorError):
    """Not now: something else holds the work (a run of the duration, a maintenance run)."""


class ServiceUnavailable(OperatorError):
    """A service did not answer (refused, silent past the timeout, unknown host)."""

    def __init__(self, service: str, address: str, reason: str, hint: str | None = None) -> None:
        variable = SERVICE_VARIABLES.get(service)
        default_hint = f"Check that {service} is running and reachable there" + (
            f", or correct {variable}." if variable else ".")
        super().__init__(f"{service} at {address} did not answer: {reason}", hint or default_hint)
        self.service = service
        self.address = address


def first_line(text: object, limit: int = 240) -> str:
    """A driver's message as one line: drivers like multi-line explanations."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = " ".join((lines[0] if lines else "").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
