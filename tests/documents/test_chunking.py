"""chunk_pages: page-aware, bounded, overlapping, cut at natural boundaries."""

from __future__ import annotations

import itertools
import random

import pytest

from wcu_ai.documents.chunking import Chunk, chunk_pages


def _check_invariants(pages: list[str], chunks: list[Chunk], max_chars: int) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert [c.page for c in chunks] == sorted(c.page for c in chunks)
    for chunk in chunks:
        page = pages[chunk.page - 1]
        assert chunk.text == page[chunk.char_start : chunk.char_end]
        assert 0 < len(chunk.text) <= max_chars
        assert chunk.text == chunk.text.strip()
    # Every non-blank character of every page is in some chunk of that page.
    for number, page in enumerate(pages, start=1):
        covered = [False] * len(page)
        for chunk in chunks:
            if chunk.page == number:
                covered[chunk.char_start : chunk.char_end] = [True] * (chunk.char_end - chunk.char_start)
        assert all(covered[i] or page[i].isspace() for i in range(len(page)))


def test_short_pages_give_one_chunk_each_with_page_numbers() -> None:
    chunks = chunk_pages(["First page.", "  Second page.\n", "Third."])
    assert [(c.page, c.ordinal, c.text) for c in chunks] == [
        (1, 0, "First page."),
        (2, 1, "Second page."),
        (3, 2, "Third."),
    ]
    assert (chunks[1].char_start, chunks[1].char_end) == (2, 14)


def test_blank_pages_give_no_chunks_but_keep_numbering() -> None:
    chunks = chunk_pages(["", "   \n\n ", "text on page three"])
    assert [(c.page, c.ordinal) for c in chunks] == [(3, 0)]


def test_no_pages_no_chunks() -> None:
    assert chunk_pages([]) == []


def test_chunks_never_cross_pages() -> None:
    pages = ["a " * 400, "b " * 400]
    chunks = chunk_pages(pages, max_chars=300, overlap=50)
    assert {c.page for c in chunks} == {1, 2}
    assert all(set(c.text) <= {"a", " "} for c in chunks if c.page == 1)
    assert all(set(c.text) <= {"b", " "} for c in chunks if c.page == 2)
    _check_invariants(pages, chunks, 300)


def test_prefers_paragraph_breaks() -> None:
    first = "Alpha sentence one. Alpha sentence two. " * 4
    second = "Beta words here. " * 6
    page = first.strip() + "\n\n" + second.strip()
    chunks = chunk_pages([page], max_chars=len(first) + 40, overlap=0)
    assert chunks[0].text == first.strip()
    assert chunks[1].text.startswith("Beta")


def test_prefers_sentence_ends_over_spaces() -> None:
    page = "One two three four five. Six seven eight nine"
    chunks = chunk_pages([page], max_chars=40, overlap=0)
    assert [c.text for c in chunks] == ["One two three four five.", "Six seven eight nine"]


def test_falls_back_to_whitespace_then_hard_cut() -> None:
    words = " ".join(f"w{i:03d}" for i in range(100))
    chunks = chunk_pages([words], max_chars=60, overlap=0)
    assert all(not c.text.startswith(" ") and c.text.split()[0].startswith("w") for c in chunks)
    assert all(len(word) == 4 for c in chunks for word in c.text.split())
    solid = "x" * 250
    hard = chunk_pages([solid], max_chars=100, overlap=10)
    assert [len(c.text) for c in hard] == [100, 100, 50]
    _check_invariants([solid], hard, 100)


def test_overlap_repeats_the_end_of_the_previous_chunk_from_a_word_start() -> None:
    page = " ".join(f"word{i}" for i in range(300))
    chunks = chunk_pages([page], max_chars=200, overlap=40)
    for previous, current in itertools.pairwise(chunks):
        assert previous.char_end - 40 <= current.char_start < previous.char_end
        assert page[current.char_start - 1] == " "
        assert previous.text.endswith(page[current.char_start : previous.char_end])


def test_phrase_across_a_boundary_is_whole_in_some_chunk() -> None:
    filler = "lorem ipsum dolor sit amet " * 20
    page = filler + "the quick brown fox jumps" + " " + filler
    for max_chars in (150, 200, 333, 500):
        chunks = chunk_pages([page], max_chars=max_chars, overlap=60)
        assert any("the quick brown fox jumps" in c.text for c in chunks), max_chars


def test_random_pages_keep_all_invariants() -> None:
    rng = random.Random(42)
    alphabet = ["word", "long" * 5, ".", "!", "\n", "\n\n", " ", "  ", "é", "日本"]
    for _ in range(200):
        pages = [
            "".join(rng.choice(alphabet) + rng.choice(["", " "]) for _ in range(rng.randint(0, 400)))
            for _ in range(rng.randint(1, 4))
        ]
        max_chars = rng.randint(20, 400)
        overlap = rng.randint(0, max_chars // 2 - 1)
        _check_invariants(pages, chunk_pages(pages, max_chars=max_chars, overlap=overlap), max_chars)


def test_default_sizes_are_bounded() -> None:
    page = "A sentence of moderate length for testing. " * 500
    chunks = chunk_pages([page])
    assert all(len(c.text) <= 1500 for c in chunks)
    assert len(chunks) == pytest.approx(len(page) / 1300, rel=0.2)


@pytest.mark.parametrize(("max_chars", "overlap"), [(1, 0), (100, 50), (100, -1), (0, 0)])
def test_bad_sizes_are_refused(max_chars: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        chunk_pages(["text"], max_chars=max_chars, overlap=overlap)
