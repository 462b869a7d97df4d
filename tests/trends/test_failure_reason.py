"""What a failed run's `trend_run.error` says (pure)."""

from __future__ import annotations

import psycopg2.errors
import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from worker.trends.lifecycle import failure_reason

pytestmark = pytest.mark.unit


def test_names_the_kind_and_the_first_line() -> None:
    error = psycopg2.errors.LockNotAvailable("canceling statement due to lock timeout\nCONTEXT: ...\n")
    assert failure_reason(error) == "LockNotAvailable: canceling statement due to lock timeout"


def test_a_time_limit_says_what_it_was_once() -> None:
    assert failure_reason(SoftTimeLimitExceeded()) == "SoftTimeLimitExceeded()"
    assert failure_reason(TimeLimitExceeded(40.0)) == "TimeLimitExceeded(40.0,)"
    assert failure_reason(RuntimeError()) == "RuntimeError"
