"""The morning post (SPEC §6): ``compose`` (pure, no tweepy import) and ``x_client`` (the
only module that talks to X)."""
