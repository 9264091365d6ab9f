"""Which PostgreSQL text-search configuration (stemmer and stop words) a document is indexed with.

Given at upload (`language`), else detected when the document is saved: PostgreSQL's own stop-word
lists decide. Scored by the detection query (queries.sql), each configuration keeps the words of a
sample that are not its stop words; the one that drops the largest share is the text's language
(in English prose about half the words are stop words). When none drops enough, the text is too
short or not prose or in a language without a configuration here, and the document gets `simple`
(no stemming, no stop words), which still finds exact words in any language.

Bounded in CPU: the sample is at most SAMPLE_CHARS characters, taken in SAMPLE_WINDOWS windows
spread over the whole text (a title page alone says little), whatever the document's length.

Searches parse the query once per configuration (migration 0003's generated column indexes each
chunk with its document's), so a French document is found by French stems of the query.
"""

from __future__ import annotations

from typing import Literal, get_args

#: PostgreSQL's built-in configurations that have a stop-word list (in every supported release),
#: and `simple`. Migration 0003's CHECK constraints and generated column name the same list.
TextSearchConfig = Literal[
    "simple",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "russian",
    "spanish",
    "swedish",
    "turkish",
]
TEXT_SEARCH_CONFIGS: tuple[str, ...] = get_args(TextSearchConfig)
FALLBACK = "simple"

SAMPLE_CHARS = 4000
SAMPLE_WINDOWS = 8
# Below this many words a sample says nothing; below this share of stop words it is not prose.
MIN_WORDS = 20
MIN_STOP_SHARE = 0.15


def detection_sample(pages: list[str] | tuple[str, ...]) -> str:
    """At most SAMPLE_CHARS characters of the text, from SAMPLE_WINDOWS evenly spaced places (pure).

    Windows are cut at whitespace so no word is halved.
    """
    text = "\n".join(page for page in pages if page)
    if len(text) <= SAMPLE_CHARS:
        return text
    width = SAMPLE_CHARS // SAMPLE_WINDOWS
    step = (len(text) - width) / (SAMPLE_WINDOWS - 1)
    windows = []
    for n in range(SAMPLE_WINDOWS):
        start = round(n * step)
        end = start + width
        window = text[start:end]
        if start > 0 and (first := _first_space(window)) >= 0:
            window = window[first + 1 :]
        if end < len(text) and (last := _last_space(window)) >= 0:
            window = window[:last]
        windows.append(window)
    return "\n".join(windows)


def _first_space(text: str) -> int:
    return next((i for i, c in enumerate(text) if c.isspace()), -1)


def _last_space(text: str) -> int:
    return next((i for i in range(len(text) - 1, -1, -1) if text[i].isspace()), -1)


def choose_config(kept: dict[str, int]) -> str:
    """The configuration that drops the largest share of the sample's words as stop words (pure).

    `kept` maps each configuration to the number of the sample's words it keeps; `simple` keeps
    them all, so kept["simple"] is the number of words. Ties go to the earlier configuration in
    TEXT_SEARCH_CONFIGS (russian indexes Latin-script words with the English stemmer and stop words,
    so English text ties it: english wins).
    """
    words = kept.get(FALLBACK, 0)
    if words < MIN_WORDS:
        return FALLBACK
    candidates = [name for name in TEXT_SEARCH_CONFIGS if name != FALLBACK and name in kept]
    if not candidates:
        return FALLBACK
    best = min(candidates, key=lambda name: (kept[name], TEXT_SEARCH_CONFIGS.index(name)))
    if (words - kept[best]) / words < MIN_STOP_SHARE:
        return FALLBACK
    return best
