"""Posting to X (API v2, ``POST /2/tweets``) with tweepy, OAuth 1.0a user context.

``X_API_BASE_URL`` (tests: a local recorder) replaces the origin tweepy builds every URL from,
in its public ``Client.session``: nothing of tweepy is monkeypatched, and the OAuth signature
covers the URL actually requested.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import tweepy

if TYPE_CHECKING:
    from worker.config.settings import Settings

log = logging.getLogger(__name__)

# The origin tweepy's BaseClient.request builds every v2 URL from.
TWEEPY_API_ORIGIN = "https://api.twitter.com"
DEFAULT_TIMEOUT_S = 30.0

_CREDENTIALS = ("x_consumer_key", "x_consumer_secret", "x_access_token", "x_access_token_secret")


class XPostError(RuntimeError):
    """The X API accepted the request but its answer holds no tweet id. HTTP errors stay
    tweepy's own exceptions, so the caller can tell a retryable failure from a permanent one."""


class _XApiSession(requests.Session):
    """Every request gets a timeout (tweepy passes none: a stalled connection would hang the
    worker for ever) and, with ``base_url`` (tests), another origin; a URL not from tweepy's
    known origin then raises, so a tweepy upgrade fails a test instead of reaching X."""

    def __init__(self, *, base_url: str | None, timeout_s: float) -> None:
        super().__init__()
        self._base_url = base_url
        self._timeout_s = timeout_s

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if self._base_url is not None:
            url = url.decode() if isinstance(url, bytes) else url
            if not url.startswith(TWEEPY_API_ORIGIN + "/"):
                raise RuntimeError(
                    f"refusing to rebase {url!r}: tweepy no longer builds URLs from "
                    f"{TWEEPY_API_ORIGIN}; update TWEEPY_API_ORIGIN in {__name__}"
                )
            url = self._base_url + url[len(TWEEPY_API_ORIGIN) :]
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(method, url, *args, **kwargs)


def _clean_base_url(base_url: str) -> str:
    """``scheme://host[:port][/prefix]`` without trailing slash: a typo fails when the poster is
    built, never sends to a wrong place."""
    parts = urlsplit(base_url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"X API base URL must be http(s)://host[:port], got {base_url!r}")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


class XPoster:
    """Posts one text to X and returns the new post's id."""

    def __init__(self, *, consumer_key: str, consumer_secret: str, access_token: str, access_token_secret: str,
                 api_base_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        # wait_on_rate_limit=False: tweepy would otherwise sleep up to 15 minutes inside
        # the Celery task; a 429 is raised and the caller decides whether to retry.
        self._client = tweepy.Client(consumer_key=consumer_key, consumer_secret=consumer_secret,
                                     access_token=access_token, access_token_secret=access_token_secret,
                                     wait_on_rate_limit=False)
        self._client.session = _XApiSession(base_url=_clean_base_url(api_base_url) if api_base_url else None,
                                            timeout_s=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings) -> XPoster | None:
        """The poster, or None (a dry run) when any of the four credentials is missing or blank
        (env files carry ``X_ACCESS_TOKEN=`` placeholders); only the names are logged."""
        values = {name: (secret.get_secret_value().strip() if (secret := getattr(settings, name)) else "")
                  for name in _CREDENTIALS}
        missing = [name.upper() for name, value in values.items() if not value]
        if missing:
            names = ",".join(missing)
            log.info("X credentials missing (%s): dry run", names, extra={"missing": names})
            return None
        return cls(consumer_key=values["x_consumer_key"], consumer_secret=values["x_consumer_secret"],
                   access_token=values["x_access_token"], access_token_secret=values["x_access_token_secret"],
                   api_base_url=settings.x_api_base_url)

    def post(self, text: str) -> str:
        """Create a post with ``text``; return its id. tweepy's and requests' errors propagate:
        the caller tells a refusal (nothing posted) from an unknown outcome."""
        response = self._client.create_tweet(text=text, user_auth=True)
        data = getattr(response, "data", None)
        tweet_id = data.get("id") if isinstance(data, dict) else None
        if not tweet_id:
            raise XPostError(f"X API answer without a post id: {response!r}")
        log.info("posted to X", extra={"tweet_id": str(tweet_id)})
        return str(tweet_id)
