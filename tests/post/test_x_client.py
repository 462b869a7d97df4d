"""XPoster against a local recorder that answers like the X API v2 (never the real API).

The recorder is a real HTTP server on 127.0.0.1, so the whole tweepy -> requests ->
OAuth 1.0a path runs: URL rebasing, JSON body, signature, status handling.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
import requests
import tweepy
from oauthlib.oauth1.rfc5849 import signature as oauth_signature
from oauthlib.oauth1.rfc5849.utils import parse_authorization_header
from pydantic import ValidationError

from tests.support.x_recorder import Recorder
from worker.config.settings import Settings
from worker.post.compose import Paper, compose_post
from worker.post.x_client import XPoster, XPostError

pytestmark = pytest.mark.integration

CREDENTIALS: dict[str, Any] = {
    "x_consumer_key": "test-consumer-key",
    "x_consumer_secret": "test-consumer-secret",
    "x_access_token": "test-access-token",
    "x_access_token_secret": "test-access-token-secret",
}
_ENV_NAMES = [*(name.upper() for name in CREDENTIALS), "X_API_BASE_URL"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings read the environment: a developer's real X credentials or a proxy must not
    # leak into these tests.
    for name in _ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


def _settings(recorder: Recorder, **overrides: str | None) -> Settings:
    values: dict[str, Any] = {**CREDENTIALS, "x_api_base_url": recorder.base_url, **overrides}
    return Settings(**values)


def _poster(recorder: Recorder) -> XPoster:
    poster = XPoster.from_settings(_settings(recorder))
    assert poster is not None
    return poster


def _text() -> str:
    text = compose_post(
        [
            Paper("10.1/a", "Überblick über die Ausbreitung von SARS-CoV-2 in Pflegeheimen", "Müller"),
            Paper("10.1/b", "新型コロナウイルス感染症の疫学", "田中"),
            Paper("10.1/c", "Masks 😷 and ventilation", None),
        ],
        "https://bit.ly/3jdLvc8",
    )
    assert text is not None
    return text


def test_post_sends_signed_json_to_post_2_tweets(x_api: Recorder) -> None:
    text = _text()

    tweet_id = _poster(x_api).post(text)

    assert tweet_id == "1234"
    assert x_api.received.wait(5)
    assert len(x_api.requests) == 1
    request = x_api.requests[0]
    assert (request.method, request.path) == ("POST", "/2/tweets")
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {"text": text}

    authorization = request.headers["Authorization"]
    assert authorization.startswith("OAuth ")
    assert f'oauth_consumer_key="{CREDENTIALS["x_consumer_key"]}"' in authorization
    assert f'oauth_token="{CREDENTIALS["x_access_token"]}"' in authorization
    assert 'oauth_signature_method="HMAC-SHA1"' in authorization
    assert "oauth_signature=" in authorization
    assert CREDENTIALS["x_consumer_secret"] not in authorization
    assert CREDENTIALS["x_access_token_secret"] not in authorization


def test_oauth_signature_is_valid_for_the_requested_url(x_api: Recorder) -> None:
    # Verifying the HMAC with both secrets catches swapped or wrong credentials, which a
    # check of the consumer key alone would not.
    _poster(x_api).post("hello")
    assert x_api.received.wait(5)
    request = x_api.requests[0]
    authorization = request.headers["Authorization"]
    oauth_params = dict(parse_authorization_header(authorization))
    signed = SimpleNamespace(
        http_method=request.method,
        uri=x_api.base_url + request.path,
        params=oauth_signature.collect_parameters(
            headers={"Authorization": authorization}, exclude_oauth_signature=True
        ),
        signature=unquote(oauth_params["oauth_signature"]),
    )
    assert oauth_signature.verify_hmac_sha1(
        signed, CREDENTIALS["x_consumer_secret"], CREDENTIALS["x_access_token_secret"]
    )
    assert not oauth_signature.verify_hmac_sha1(signed, "wrong", "secrets")


def test_forbidden_raises_tweepy_forbidden(x_api: Recorder) -> None:
    x_api.status = 403
    x_api.answer = {
        "detail": "You are not allowed to create a Tweet with duplicate content.",
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
    }

    with pytest.raises(tweepy.errors.Forbidden) as raised:
        _poster(x_api).post("same text twice")

    assert raised.value.response.status_code == 403
    assert "duplicate content" in str(raised.value)
    assert len(x_api.requests) == 1


def test_rate_limit_raises_at_once_with_reset_time(x_api: Recorder) -> None:
    x_api.status = 429
    x_api.answer = {"title": "Too Many Requests", "detail": "Too Many Requests", "status": 429}
    x_api.answer_headers = {"x-rate-limit-reset": "1900000000"}

    with pytest.raises(tweepy.errors.TooManyRequests) as raised:
        _poster(x_api).post("hello")

    assert raised.value.reset_time == 1900000000
    # no sleeping and retrying inside the task (wait_on_rate_limit=False)
    assert len(x_api.requests) == 1


def test_answer_without_id_is_an_error(x_api: Recorder) -> None:
    x_api.answer = {"errors": []}
    with pytest.raises(XPostError, match="without a post id"):
        _poster(x_api).post("hello")


def test_stalled_api_times_out_instead_of_hanging(x_api: Recorder) -> None:
    x_api.hold = True
    settings = _settings(x_api)
    poster = XPoster(
        consumer_key=CREDENTIALS["x_consumer_key"],
        consumer_secret=CREDENTIALS["x_consumer_secret"],
        access_token=CREDENTIALS["x_access_token"],
        access_token_secret=CREDENTIALS["x_access_token_secret"],
        api_base_url=settings.x_api_base_url,
        timeout_s=0.3,
    )
    with pytest.raises(requests.exceptions.Timeout):
        poster.post("hello")
    assert x_api.received.is_set()


@pytest.mark.parametrize("missing", sorted(CREDENTIALS))
@pytest.mark.parametrize("value", [None, "", "   "])
def test_any_missing_credential_means_dry_run(
    x_api: Recorder, missing: str, value: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="worker.post.x_client")

    assert XPoster.from_settings(_settings(x_api, **{missing: value})) is None

    assert x_api.requests == []
    assert missing.upper() in caplog.text
    for secret in CREDENTIALS.values():
        assert secret not in caplog.text


def test_base_url_with_trailing_slash(x_api: Recorder) -> None:
    poster = XPoster.from_settings(_settings(x_api, x_api_base_url=x_api.base_url + "/"))
    assert poster is not None
    assert poster.post("hello") == "1234"
    assert x_api.requests[0].path == "/2/tweets"


@pytest.mark.parametrize("bad", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://"])
def test_bad_base_url_is_refused_at_start(bad: str) -> None:
    # Settings refuse it before any poster exists; the poster refuses it too when built directly.
    with pytest.raises(ValidationError, match="x_api_base_url"):
        Settings(**CREDENTIALS, x_api_base_url=bad)
    with pytest.raises(ValueError, match="base URL"):
        XPoster(consumer_key="k", consumer_secret="s", access_token="t", access_token_secret="ts",
                api_base_url=bad)


def test_rebasing_refuses_an_unknown_origin(x_api: Recorder) -> None:
    # Should tweepy build URLs from another origin one day, the poster must fail instead of
    # silently sending a test's request to the real API.
    from worker.post.x_client import _XApiSession

    session = _XApiSession(base_url=x_api.base_url, timeout_s=1.0)
    with pytest.raises(RuntimeError, match="refusing to rebase"):
        session.request("POST", "https://api.x.com/2/tweets", json={"text": "hello"})
    assert x_api.requests == []
