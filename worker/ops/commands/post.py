"""`aggregator post [--dry-run]`: the morning post, in this process; prints the text and the outcome."""

from __future__ import annotations

import argparse

from worker.config.settings import Settings
from worker.post.morning import morning_post


def run(args: argparse.Namespace, settings: Settings) -> int:
    outcome = morning_post(settings, dry_run=args.dry_run)
    if outcome.text:
        print(outcome.text)
    print(f"status: {outcome.status}" + (f" tweet_id={outcome.tweet_id}" if outcome.tweet_id else ""))
    return 0
