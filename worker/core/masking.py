"""Credentials out of everything a person reads: logs, health lines, error messages.

Passwords come in URLs (``redis://:pw@host:6379/0``) and libpq keyword strings
(``password=pw``); :func:`scrub` also removes known secret values, as a driver may quote a DSN.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# password=value or password='quoted value' in a libpq keyword string.
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# scheme://user:password@ anywhere in a text.
_URL_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (anything unparsable is masked whole)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", url)
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def mask_dsn(dsn: str) -> str:
    """A PostgreSQL DSN, URL or keyword form, without its password."""
    if "://" in dsn:
        return mask_url(dsn)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", dsn)


def scrub(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every known secret value and every password-looking part masked."""
    for secret in sorted((s for s in secrets if s and len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}\g<3>", text)
    return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", text)
