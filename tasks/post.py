"""The morning post task (beat, 05:59 UTC, queue `celery`)."""

from __future__ import annotations

from typing import Any

import tweepy
from celery import Task

from worker.celeryapp.app import app
from worker.celeryapp.resources import for_process
from worker.core import names
from worker.post.morning import morning_post


@app.task(name=names.MORNING_POST, bind=True, autoretry_for=(tweepy.TooManyRequests, tweepy.TwitterServerError),
          retry_backoff=60, retry_backoff_max=900, max_retries=5)
def morning_post_task(self: Task[Any, Any]) -> dict[str, Any]:
    """Rate limits and X server errors are retried (the claim was released); other refusals
    (403: duplicate, revoked app) fail the task for an operator to look at."""
    outcome = morning_post(for_process().settings)
    return {"status": outcome.status, "tweet_id": outcome.tweet_id, "text": outcome.text}
