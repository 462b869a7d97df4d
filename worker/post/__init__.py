"""The morning post (SPEC §6): composing the text (pure) and posting it to X.

``compose`` has no I/O so the text can be tested exhaustively; ``x_client`` is the only
module that talks to the X API. They are separate modules so that importing the
composition does not import tweepy.
"""

from worker.post.compose import Paper, compose_post, weighted_length

__all__ = ["Paper", "compose_post", "weighted_length"]
