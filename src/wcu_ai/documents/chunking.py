"""Splitting page text into bounded, slightly overlapping chunks for search and embeddings.

Chunks never cross a page, so every search hit names one page. Within a page a chunk is at
most `max_chars` long and ends, by preference, at a paragraph break, then a sentence end, then
a line break, then any whitespace, looking no further back than half a chunk; only a run of
text with no whitespace at all is cut mid-word. The next chunk starts about `overlap`
characters before the previous one ended, at the start of a word, so a phrase cut by a
boundary still appears whole in one chunk.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

DEFAULT_MAX_CHARS = 1500
DEFAULT_OVERLAP = 200

# (pattern, cut after the match?) in order of preference.
_BOUNDARIES: tuple[tuple[re.Pattern[str], bool], ...] = (
    (re.compile(r"\n[ \t]*\n"), False),
    (re.compile("[.!?\u2026][\"')\\]\u2019\u201d\u00bb]*(?=\\s)"), True),
    (re.compile(r"\n"), False),
    (re.compile(r"\s"), False),
)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of one page: `text == pages[page - 1][char_start:char_end]`."""

    page: int
    ordinal: int
    text: str
    char_start: int
    char_end: int


def chunk_pages(
    pages: list[str] | tuple[str, ...],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """Chunks of every page in order; `page` is 1-based, `ordinal` counts from 0 over the document."""
    return list(iter_chunks(pages, max_chars=max_chars, overlap=overlap))


def iter_chunks(
    pages: list[str] | tuple[str, ...],
    *,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> Iterator[Chunk]:
    """The chunks of chunk_pages one at a time, so a caller can stop at a limit without making the rest."""
    if max_chars < 2:
        raise ValueError("max_chars must be at least 2")
    if not 0 <= overlap < max_chars // 2:
        raise ValueError("overlap must be >= 0 and less than half of max_chars")
    ordinal = 0
    for page, text in enumerate(pages, start=1):
        for start, end in _spans(text, max_chars, overlap):
            yield Chunk(page, ordinal, text[start:end], start, end)
            ordinal += 1


def _spans(text: str, max_chars: int, overlap: int) -> Iterator[tuple[int, int]]:
    length = len(text)
    start = _skip_space(text, 0)
    while start < length:
        limit = start + max_chars
        end = length if limit >= length else _cut(text, start, limit, max_chars)
        stop = end
        while stop > start and text[stop - 1].isspace():
            stop -= 1
        yield start, stop
        if _skip_space(text, end) >= length:
            return
        start = _skip_space(text, _next_start(text, start, stop, overlap))


def _cut(text: str, start: int, limit: int, max_chars: int) -> int:
    """Where the chunk starting at `start` should end: at most `limit`, at least half a chunk."""
    earliest = start + max_chars // 2
    for pattern, after in _BOUNDARIES:
        best = -1
        for match in pattern.finditer(text, earliest, limit + 1):
            cut = match.end() if after else match.start()
            if earliest <= cut <= limit:
                best = cut
        if best != -1:
            return best
    return limit


def _next_start(text: str, start: int, stop: int, overlap: int) -> int:
    if overlap == 0:
        return stop
    lowest = max(stop - overlap, start + 1)
    for index in range(lowest, stop):
        if text[index].isspace():
            return index + 1
    return stop


def _skip_space(text: str, index: int) -> int:
    length = len(text)
    while index < length and text[index].isspace():
        index += 1
    return index
