"""The failures of ingestion's two writes, light to import: the commands classify them
without loading Celery or librdkafka (:mod:`worker.ops.failures`)."""

from __future__ import annotations


class PublishError(RuntimeError):
    """The broker did not take the batch; keep it and retry later."""


class DeadLetterError(RuntimeError):
    """The dead-letter write was not confirmed; retry it."""
