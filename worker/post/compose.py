"""Text of the morning post (SPEC §6; docs/trends.md, "The morning post"). Pure.

The length is measured with X's own counting (``twitter-text-parser``: URLs 23, CJK and
emoji 2, after NFC) on the complete text of every attempt: a post 1 over the limit is
refused at 05:59 with nobody watching.

Cutting (:func:`cut_text`, on the normalized title, N in code points): a title of at most N
is kept; otherwise it ends at the last space at index <= N, or, without one, is hard-cut
without splitting a glyph; then ``" (...)"`` follows. If the cut form would not weigh less
for X, the whole title stays.

Attempts, the first that fits wins: titles cut at 40, 30, 20, 10; titles dropped (a paper
without author keeps its title cut at 10); author names cut at 40..10; the first 2, then
1 paper. With a URL link the last always fits; otherwise ``ValueError``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from twitter_text import parse_tweet

HEADER = "Todays trending COVID-19 papers:"
CUT_SUFFIX = " (...)"
CUT_LENGTHS: tuple[int, ...] = (40, 30, 20, 10)
MAX_PAPERS = 3
X_LIMIT = 280

# X rejects a post containing these (twitter-text's "invalid characters").
_X_INVALID = frozenset("\ufffe\ufeff\uffff")
_ZWJ = "\u200d"


@dataclass(frozen=True, slots=True)
class Paper:
    """One ranked publication, as read from ``trending_covid_papers``."""

    doi: str
    title: str
    author_last_name: str | None  # None when the publication has no author


def weighted_length(text: str) -> int:
    """Length of ``text`` as X counts it against the 280 limit.

    The single place that calls ``twitter-text-parser``: URLs count 23 whatever their
    length, CJK and emoji 2, after NFC normalization, as the X API does.
    """
    return int(parse_tweet(text).weightedLength)


def _dropped(char: str) -> bool:
    """Control characters other than whitespace, and the characters X rejects."""
    return char in _X_INVALID or (unicodedata.category(char) == "Cc" and not char.isspace())


def normalize_text(text: str) -> str:
    """Title or name as it may appear in a post.

    Metadata titles carry newlines, tabs and runs of spaces (copied from PDFs), which would
    break the one-line-per-paper layout; control characters and the characters X rejects
    (U+FFFE, U+FEFF, U+FFFF) would make the API refuse the post. Those are removed, every
    run of whitespace becomes one space, the ends are stripped, and the result is NFC (the
    form X stores and counts, so the cut lengths match what is shown).
    """
    kept = "".join(char for char in text if not _dropped(char))
    return unicodedata.normalize("NFC", " ".join(kept.split()))


def _extends_previous(char: str) -> bool:
    """True for a code point drawn as part of the glyph before it (approximation of
    Unicode grapheme-cluster extenders, enough for titles and names)."""
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")
        or char == _ZWJ
        or 0xFE00 <= code <= 0xFE0F  # variation selectors (emoji vs text presentation)
        or 0xE0100 <= code <= 0xE01EF  # variation selectors supplement
        or 0x1F3FB <= code <= 0x1F3FF  # emoji skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences (subdivision flags)
    )


def _is_regional_indicator(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _glyph_safe_end(text: str, end: int) -> int:
    """Largest cut index <= ``end`` that does not split one glyph of ``text``.

    A hard cut in the middle of an emoji ZWJ sequence or before a combining accent would
    post a broken or different symbol. Returns ``end`` unchanged when the whole prefix is a
    single glyph (nothing better is possible).
    """
    index = end
    while 0 < index < len(text):
        if _extends_previous(text[index]) or text[index - 1] == _ZWJ:
            index -= 1
            continue
        if _is_regional_indicator(text[index]) and _is_regional_indicator(text[index - 1]):
            # Flags are pairs of regional indicators; cut only between two pairs.
            run = 0
            while index - 1 - run >= 0 and _is_regional_indicator(text[index - 1 - run]):
                run += 1
            if run % 2 == 1:
                index -= 1
                continue
        break
    return index if index > 0 else end


def cut_text(text: str, max_chars: int) -> str:
    """``text`` (already normalized) shortened to at most ``max_chars`` characters at a word
    boundary plus ``" (...)"``; see the module docstring for the exact rule."""
    if len(text) <= max_chars:
        return text
    space = text.rfind(" ", 0, max_chars + 1)
    head = text[:space] if space > 0 else text[: _glyph_safe_end(text, max_chars)]
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
    """Paper lines of each attempt, from the most to the least informative."""
    for max_chars in CUT_LENGTHS:
        yield [_line(number, name, cut_text(title, max_chars)) for number, (name, title) in enumerate(papers, start=1)]

    shortest = CUT_LENGTHS[-1]

    def without_titles(count: int, name_max: int | None) -> list[str]:
        lines = []
        for number, (name, title) in enumerate(papers[:count], start=1):
            if name:
                shown = name if name_max is None else cut_text(name, name_max)
                lines.append(_line(number, shown, None))
            else:
                lines.append(_line(number, None, cut_text(title, shortest)))
        return lines

    yield without_titles(len(papers), None)
    for max_chars in CUT_LENGTHS:
        yield without_titles(len(papers), max_chars)
    for count in range(len(papers) - 1, 0, -1):
        yield without_titles(count, shortest)


def compose_post(papers: Sequence[Paper], link: str, limit: int = X_LIMIT) -> str | None:
    """The morning post for the first three of ``papers`` (already ranked), or None when
    there are no papers (nothing to post).

    Never returns a text whose X weighted length exceeds ``limit``. Raises ``ValueError``
    for a link that is empty, contains whitespace or leaves no room for a paper line:
    that is a configuration error and must be loud, not a silently skipped post.
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
