"""The morning post (SPEC §6): ``compose`` (pure, no tweepy import) and ``x_client`` (the
only module that talks to X)."""

from worker.post.compose import Paper, compose_post, weighted_length

__all__ = ["Paper", "compose_post", "weighted_length"]
