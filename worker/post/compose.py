"""Text of the morning post (SPEC §6; docs/trends.md, "The morning post"). Pure.

Every attempt is measured whole with X's own counting (``twitter-text-parser``: URLs 23, CJK
and emoji 2, after NFC): a post 1 over the limit is refused at 05:59 with nobody watching.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from twitter_text import parse_tweet
from wcwidth import grapheme_boundary_before

HEADER = "Todays trending COVID-19 papers:"
CUT_SUFFIX = " (...)"
CUT_LENGTHS: tuple[int, ...] = (40, 30, 20, 10)
MAX_PAPERS = 3
X_LIMIT = 280

# X rejects a post containing these (twitter-text's "invalid characters").
_X_INVALID = frozenset("\ufffe\ufeff\uffff")


@dataclass(frozen=True, slots=True)
class Paper:
    """One ranked publication, as read from ``trending_covid_papers``."""

    doi: str
    title: str
    author_last_name: str | None  # None when the publication has no author


def weighted_length(text: str) -> int:
    """Length of ``text`` as X counts it against the 280 limit."""
    return int(parse_tweet(text).weightedLength)


def _dropped(char: str) -> bool:
    """Control characters other than whitespace, and the characters X rejects."""
    return char in _X_INVALID or (unicodedata.category(char) == "Cc" and not char.isspace())


def normalize_text(text: str) -> str:
    """Title or name on one line (titles copied from PDFs carry newlines and runs of spaces),
    without the characters X refuses a post for, in NFC (what X stores and counts)."""
    kept = "".join(char for char in text if not _dropped(char))
    return unicodedata.normalize("NFC", " ".join(kept.split()))


def cut_text(text: str, max_chars: int) -> str:
    """``text`` (normalized) if at most ``max_chars`` code points; else cut at the last space at
    index <= ``max_chars`` plus ``" (...)"``, unless that would not weigh less for X."""
    if len(text) <= max_chars:
        return text
    space = text.rfind(" ", 0, max_chars + 1)
    # Without a space: before the glyph (grapheme cluster) at max_chars, so no emoji sequence or
    # accented letter is split, unless that glyph starts the text.
    head = text[:space] if space > 0 else text[: grapheme_boundary_before(text, max_chars + 1) or max_chars]
    cut = head + CUT_SUFFIX
    return cut if weighted_length(cut) < weighted_length(text) else text


def _line(number: int, name: str | None, title: str | None) -> str:
    parts = [f"{number}."]
    if name:
        parts.append(f"{name} et al.")
    if title:
        parts.append(title)
    return " ".join(parts)


def _attempts(papers: Sequence[tuple[str | None, str]]) -> Iterator[list[str]]:
    """Paper lines of each attempt, the most informative first: titles cut at 40..10; titles
    dropped (a paper without author keeps its title cut at 10); names cut at 40..10; the first
    2, then 1 paper."""
    for max_chars in CUT_LENGTHS:
        yield [_line(number, name, cut_text(title, max_chars)) for number, (name, title) in enumerate(papers, start=1)]

    shortest = CUT_LENGTHS[-1]

    def without_titles(count: int, name_max: int | None) -> list[str]:
        return [_line(number, name if name_max is None else cut_text(name, name_max), None) if name
                else _line(number, None, cut_text(title, shortest))
                for number, (name, title) in enumerate(papers[:count], start=1)]

    for name_max in (None, *CUT_LENGTHS):
        yield without_titles(len(papers), name_max)
    for count in range(len(papers) - 1, 0, -1):
        yield without_titles(count, shortest)


def compose_post(papers: Sequence[Paper], link: str, limit: int = X_LIMIT) -> str | None:
    """The morning post for the first three of ``papers`` (ranked), None without papers.

    ``ValueError`` for a link that is empty, holds whitespace or leaves no room for a paper
    line: a configuration error must be loud, not a silently skipped post.
    """
    chosen = [
        (normalize_text(paper.author_last_name or "") or None, normalize_text(paper.title))
        for paper in papers[:MAX_PAPERS]
    ]
    if not chosen:
        return None
    link = link.strip()
    if not link or any(char.isspace() for char in link):
        raise ValueError(f"the trending link must be one word without whitespace: {link!r}")
    if weighted_length(f"{HEADER}\n{link}") > limit:
        raise ValueError(f"header and link alone exceed the limit of {limit}: {link!r}")

    for lines in _attempts(chosen):
        text = "\n".join([HEADER, *lines, link])
        if weighted_length(text) <= limit:
            return text
    raise ValueError(f"no paper line fits within {limit} with the link {link!r}")
