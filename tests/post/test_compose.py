"""The morning post text (SPEC §6): layout, title cutting, X's weighted length."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.post.compose import (
    CUT_LENGTHS,
    CUT_SUFFIX,
    HEADER,
    Paper,
    compose_post,
    cut_text,
    normalize_text,
    weighted_length,
)

pytestmark = pytest.mark.unit

LINK = "https://bit.ly/3jdLvc8"


def paper(title: str, author: str | None = "Smith", doi: str = "10.1/x") -> Paper:
    return Paper(doi=doi, title=title, author_last_name=author)


# --- layout -------------------------------------------------------------------------------


def test_three_short_papers_exact_text() -> None:
    papers = [
        paper("Masks work", "Smith"),
        paper("Vaccines work", "Jones"),
        paper("Ventilation works", "Brown"),
    ]
    assert compose_post(papers, LINK) == (
        "Todays trending COVID-19 papers:\n"
        "1. Smith et al. Masks work\n"
        "2. Jones et al. Vaccines work\n"
        "3. Brown et al. Ventilation works\n"
        "https://bit.ly/3jdLvc8"
    )


def test_only_the_first_three_papers_in_the_given_order() -> None:
    papers = [paper(f"Title {i}", f"Author{i}") for i in range(5)]
    text = compose_post(papers, LINK)
    assert text is not None
    assert text.splitlines()[1:-1] == [
        "1. Author0 et al. Title 0",
        "2. Author1 et al. Title 1",
        "3. Author2 et al. Title 2",
    ]


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_than_three_papers(count: int) -> None:
    papers = [paper(f"Title {i}", f"Author{i}") for i in range(count)]
    text = compose_post(papers, LINK)
    assert text is not None
    lines = text.splitlines()
    assert lines[0] == HEADER
    assert lines[-1] == LINK
    assert lines[1:-1] == [f"{i + 1}. Author{i} et al. Title {i}" for i in range(count)]


@pytest.mark.parametrize("papers", [[], ()])
def test_no_papers_no_post(papers: list[Paper]) -> None:
    assert compose_post(papers, LINK) is None


@pytest.mark.parametrize("author", [None, "", "  \n "])
def test_missing_author_line_is_number_and_title(author: str | None) -> None:
    text = compose_post([paper("A paper nobody signed", author)], LINK)
    assert text == f"{HEADER}\n1. A paper nobody signed\n{LINK}"


def test_whitespace_in_titles_and_names_is_normalized() -> None:
    text = compose_post([paper("  Long\ncovid:\t\tthe   first\r\nyear ", " van\nder Berg ")], LINK)
    assert text == f"{HEADER}\n1. van der Berg et al. Long covid: the first year\n{LINK}"


@pytest.mark.parametrize("link", ["", "   ", "https://a.example/x y", "https://a.example/\nx"])
def test_bad_link_is_a_configuration_error(link: str) -> None:
    with pytest.raises(ValueError, match="link"):
        compose_post([paper("T")], link)


def test_link_that_cannot_fit_is_an_error_not_an_overlong_post() -> None:
    with pytest.raises(ValueError):
        compose_post([paper("T")], "x" * 300)


# --- title cutting rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "max_chars", "expected"),
    [
        # not longer than the max: whole
        ("a" * 40, 40, "a" * 40),
        ("Short", 10, "Short"),
        # last space at an index <= max; a space exactly at index max keeps max characters
        ("aaaa bbbb cccc dddd", 9, "aaaa bbbb (...)"),
        ("aaaa bbbb cccc dddd", 10, "aaaa bbbb (...)"),
        ("aaaa bbbb cccc dddd", 8, "aaaa (...)"),
        # no space at or before max: hard cut at max characters
        ("abcdefghijklmnopqrstuvwxyz and more", 10, "abcdefghij (...)"),
        ("新型コロナウイルス感染症の流行", 10, "新型コロナウイルス感 (...)"),
        # the cut form would not weigh less than the whole title: whole
        ("新型コロナウイルス感染症の", 10, "新型コロナウイルス感染症の"),  # weighs 26 as cut
        ("aaaaaaaa bb", 10, "aaaaaaaa bb"),
        ("新型コロナウイルス感染症の流", 10, "新型コロナウイルス感 (...)"),  # 26 < 28
        ("abcdefghijklmn", 10, "abcdefghijklmn"),
    ],
)
def test_cut_text_rule(text: str, max_chars: int, expected: str) -> None:
    assert cut_text(text, max_chars) == expected


@pytest.mark.parametrize(
    ("text", "max_chars", "expected_head"),
    [
        # ZWJ family emoji (5 code points) is not split
        ("ab👩\u200d👩\u200d👧cdefghijkl", 4, "ab"),
        # flag = two regional indicators: cut between flags only
        ("🇩🇪🇫🇷🇮🇹🇪🇸🇵🇹🇳🇱", 5, "🇩🇪🇫🇷"),
        # a combining mark that NFC cannot compose stays with its letter
        ("abcq\u0303defghijklmnop", 4, "abc"),
        # skin-tone modifier stays with its emoji
        ("abc👍🏽defghijklmnop", 4, "abc"),
    ],
)
def test_hard_cut_does_not_split_a_glyph(text: str, max_chars: int, expected_head: str) -> None:
    assert cut_text(text, max_chars) == expected_head + CUT_SUFFIX


def test_titles_are_cut_at_40_when_that_fits() -> None:
    title = "Effectiveness of mRNA vaccines against the Omicron variant in elderly care homes"
    text = compose_post([paper(title, "Müller")] * 3, LINK)
    assert text is not None
    assert text.splitlines()[1] == "1. Müller et al. Effectiveness of mRNA vaccines against (...)"
    assert weighted_length(text) <= 280


def test_all_titles_shrink_together_until_the_post_fits() -> None:
    # With these long names, 40-character cuts weigh 311 > 280; 30-character cuts fit.
    names = ["Abcdefghijklmnopqrstuvwxyzab"] * 3
    title = "one two three four five six seven eight nine ten eleven twelve"
    text = compose_post([paper(title, name) for name in names], LINK)
    assert text is not None
    with_40 = "\n".join([HEADER, *[f"{i}. {names[0]} et al. {cut_text(title, 40)}" for i in (1, 2, 3)], LINK])
    assert weighted_length(with_40) > 280
    assert text.splitlines()[1:-1] == [f"{i}. {names[0]} et al. one two three four five six (...)" for i in (1, 2, 3)]
    assert weighted_length(text) <= 280


def test_short_title_kept_whole_while_long_ones_are_cut() -> None:
    long_title = "word " * 30
    papers = [paper(long_title, "A"), paper("Tiny title", "B"), paper(long_title, "C")]
    text = compose_post(papers, LINK, limit=180)
    assert text is not None
    assert text.splitlines()[1:-1] == [
        "1. A et al. word word word word word word (...)",
        "2. B et al. Tiny title",
        "3. C et al. word word word word word word (...)",
    ]
    assert weighted_length(text) <= 180


# --- non-ASCII and X's weighting --------------------------------------------------------------


def test_weighted_length_uses_x_rules() -> None:
    assert weighted_length("Müller Überblick") == 16  # umlauts weigh 1
    assert weighted_length("日本語") == 6  # CJK weighs 2
    assert weighted_length("😷") == 2  # one emoji weighs 2
    assert weighted_length("👩\u200d👩\u200d👧") == 2  # a ZWJ sequence is one emoji
    assert weighted_length("https://example.org/" + "a" * 200) == 23  # any URL is 23
    assert weighted_length(HEADER) == 32


def test_german_umlauts_count_one_and_are_kept() -> None:
    title = "Überblick über die Ausbreitung von SARS-CoV-2 in Pflegeheimen während der Pandemie"
    text = compose_post([paper(title, "Schröder")], LINK)
    assert text is not None
    assert text.splitlines()[1] == "1. Schröder et al. Überblick über die Ausbreitung von (...)"


def test_decomposed_umlauts_are_nfc_normalized() -> None:
    text = compose_post([paper("U\u0308berblick", "Mu\u0308ller")], LINK)
    assert text == f"{HEADER}\n1. Müller et al. Überblick\n{LINK}"


def test_cjk_titles_are_cut_by_weighted_not_plain_length() -> None:
    # Three 60-character CJK titles: at 40 characters the post is 205 characters long
    # (len) but weighs 326 for X; only the 30-character cut fits.
    title = "新型コロナウイルス感染症" * 5
    papers = [paper(title, None)] * 3
    forty = "\n".join([HEADER, *[f"{i}. {cut_text(title, 40)}" for i in (1, 2, 3)], LINK])
    assert len(forty) <= 280 < weighted_length(forty)
    text = compose_post(papers, LINK)
    assert text is not None
    assert text.splitlines()[1] == f"1. {title[:30]}{CUT_SUFFIX}"
    assert weighted_length(text) <= 280


def test_emoji_titles_fit_and_are_not_split() -> None:
    title = "🦠😷💉" * 30  # no spaces, 90 emoji: hard cuts
    text = compose_post([paper(title, "Tanaka")] * 3, LINK)
    assert text is not None
    assert weighted_length(text) <= 280
    for line in text.splitlines()[1:-1]:
        shown = line.split(" et al. ", 1)[1]
        assert shown.endswith(CUT_SUFFIX)
        assert title.startswith(shown.removesuffix(CUT_SUFFIX))


def test_long_link_counts_23() -> None:
    link = "https://trending.example.org/covid-19/today?" + "q=1&" * 50
    text = compose_post([paper("Masks work")], link)
    assert text == f"{HEADER}\n1. Smith et al. Masks work\n{link}"
    assert len(text) > 200
    assert weighted_length(text) < 100


# --- fallbacks ---------------------------------------------------------------------------------


def test_titles_dropped_when_even_the_shortest_cut_does_not_fit() -> None:
    names = ["Consortium " + "x" * 90 for _ in range(2)]
    papers = [paper("A title that will not be shown", name) for name in names]
    papers.append(paper("An authorless paper keeps a short title", None))
    text = compose_post(papers, LINK)
    assert text is not None
    lines = text.splitlines()
    assert weighted_length(text) <= 280
    assert "title that" not in text
    assert lines[1].startswith("1. Consortium ") and lines[1].endswith(" et al.")
    assert lines[3] == "3. An (...)"


def test_never_over_the_limit_with_absurd_names() -> None:
    papers = [paper("T " * 100, "N" * 500) for _ in range(3)]
    for limit in (90, 150, 280):
        text = compose_post(papers, LINK, limit=limit)
        assert text is not None
        assert weighted_length(text) <= limit
        assert text.startswith(HEADER + "\n1. ")
        assert text.endswith("\n" + LINK)


def test_limit_too_small_for_any_line_raises_instead_of_overlong_post() -> None:
    with pytest.raises(ValueError, match="no paper line fits"):
        compose_post([paper("T " * 100, "N" * 500)], LINK, limit=70)


def test_normalize_text() -> None:
    assert normalize_text(" a\u00a0\u2028b\x00c\ufeff\n\td ") == "a bc d"
    assert normalize_text("\n\t ") == ""


# --- properties --------------------------------------------------------------------------------

_whitespace = st.sampled_from([" ", "  ", "\n", "\t", "\r\n", "\u3000", "\u00a0"])
_words = st.lists(
    st.text(min_size=1, max_size=14),
    max_size=14,
).flatmap(
    lambda words: st.lists(_whitespace, min_size=len(words), max_size=len(words)).map(
        lambda seps: "".join(w + s for w, s in zip(words, seps, strict=True))
    )
)
_titles = st.one_of(_words, st.text(max_size=250))
_names = st.one_of(st.none(), st.text(max_size=20), st.text(min_size=30, max_size=120))
_papers = st.lists(
    st.builds(Paper, doi=st.just("10.1/x"), title=_titles, author_last_name=_names),
    max_size=5,
)
_links = st.sampled_from([LINK, "https://example.org/trending/" + "x" * 120, "bit.ly/3jdLvc8"])


def _is_cut_of(shown: str, original: str) -> bool:
    """``shown`` is ``original`` or a word-boundary / hard cut of it with the suffix."""
    if shown == original:
        return True
    if not shown.endswith(CUT_SUFFIX):
        return False
    head = shown.removesuffix(CUT_SUFFIX)
    if not head or len(head) >= len(original) or not original.startswith(head):
        return False
    if len(head) > max(CUT_LENGTHS):
        return False
    word_boundary = original[len(head)] == " "
    hard_cut = " " not in original[: len(head) + 1]
    return word_boundary or hard_cut


def _line_is_rendering_of(line: str, number: int, item: Paper) -> bool:
    name = normalize_text(item.author_last_name or "")
    title = normalize_text(item.title)
    prefix = f"{number}."
    if not line.startswith(prefix):
        return False
    body = line[len(prefix) :]
    if not name:
        return body == "" if not title else body.startswith(" ") and _is_cut_of(body[1:], title)
    if not body.startswith(" "):
        return False
    body = body[1:]
    marker = " et al."
    start = body.find(marker)
    while start != -1:  # a name may itself contain " et al.": try every split
        shown_name, rest = body[:start], body[start + len(marker) :]
        if _is_cut_of(shown_name, name) and (rest == "" or (rest.startswith(" ") and _is_cut_of(rest[1:], title))):
            return True
        start = body.find(marker, start + 1)
    return False


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(papers=_papers, link=_links)
def test_property_post_fits_and_shows_prefixes_of_titles(papers: list[Paper], link: str) -> None:
    text = compose_post(papers, link)
    if not papers:
        assert text is None
        return
    assert text is not None
    assert weighted_length(text) <= 280
    assert text.startswith(HEADER + "\n")
    assert text.endswith("\n" + link)
    lines = text.split("\n")[1:-1]
    assert 1 <= len(lines) <= min(3, len(papers))
    for number, (line, item) in enumerate(zip(lines, papers, strict=False), start=1):
        assert _line_is_rendering_of(line, number, item), (line, item)


@settings(max_examples=200, deadline=None)
@given(title=st.text(max_size=200), max_chars=st.sampled_from(CUT_LENGTHS))
def test_property_cut_text_is_a_prefix_and_not_longer(title: str, max_chars: int) -> None:
    normalized = normalize_text(title)
    shown = cut_text(normalized, max_chars)
    assert _is_cut_of(shown, normalized)
    assert weighted_length(shown) <= weighted_length(normalized)
    if len(normalized) <= max_chars:
        assert shown == normalized
    else:
        assert len(shown) <= max_chars + len(CUT_SUFFIX)
