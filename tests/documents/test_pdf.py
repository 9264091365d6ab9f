"""read_pdf and the poppler wrappers with the real poppler on PDFs the tests write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.factories import make_pdf
from tests.pdf_bytes import repeated_text_pdf, scanned_pdf, shared_content_pdf, text_image
from wcu_ai.documents.pdf import (
    MAX_METADATA_CHARS,
    PageSize,
    PdfContent,
    page_sizes,
    pages_with_images,
    parse_image_pages,
    parse_page_sizes,
    parse_pdftotext_html,
    read_pdf,
)
from wcu_ai.documents.process import ToolLimits
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolOutputLimitError,
)

documents = pytest.mark.documents


def _read(
    path: Path,
    *,
    max_pages: int = 100,
    timeout: float = 30,
    scratch: Path | None = None,
    max_text_chars: int = 1_000_000,
    limits: ToolLimits | None = None,
) -> PdfContent:
    return asyncio.run(
        read_pdf(
            path,
            max_pages=max_pages,
            timeout=timeout,
            scratch_dir=scratch,
            max_text_chars=max_text_chars,
            limits=limits,
        )
    )


@documents
def test_round_trip_pages_text_and_metadata(tmp_path: Path) -> None:
    pages = ["First page: café, naïve, 50 €.", "Second page\nwith two lines.", "Third (last) page \\ end."]
    path = make_pdf(tmp_path / "three.pdf", pages, title="Quarterly: Report", author="Zoë Åberg")
    content = _read(path)
    assert content.page_count == 3
    assert content.pages == tuple(pages)
    assert content.title == "Quarterly: Report"
    assert content.author == "Zoë Åberg"
    assert content.producer == "wcu_ai tests"


@documents
def test_empty_page_keeps_its_place(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "gap.pdf", ["one", "", "three", ""])
    content = _read(path)
    assert content.page_count == 4
    assert content.pages == ("one", "", "three", "")


@documents
@documents
def test_metadata_is_cut_to_a_label_and_its_whitespace_folded(tmp_path: Path) -> None:
    # A 24 KB PDF once stored titles of 8 million characters, and every listing served them.
    path = make_pdf(tmp_path / "meta.pdf", ["body"], title="T" * 100_000, author="Ada\n\n  Lovelace")
    content = _read(path)
    assert content.title == "T" * MAX_METADATA_CHARS
    assert content.author == "Ada Lovelace"


def test_missing_metadata_is_none(tmp_path: Path) -> None:
    content = _read(make_pdf(tmp_path / "plain.pdf", ["x"]))
    assert content.title is None
    assert content.author is None


@documents
def test_password_protected_pdf_says_so(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "locked.pdf", ["secret"], user_password="s3cret")
    with pytest.raises(EncryptedDocumentError, match="password-protected"):
        _read(path)


@documents
def test_encrypted_with_empty_user_password_is_readable(tmp_path: Path) -> None:
    content = _read(make_pdf(tmp_path / "owner-only.pdf", ["open text"], user_password=""))
    assert content.pages == ("open text",)


@documents
def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    with pytest.raises(DocumentError, match="empty"):
        _read(path)


@documents
@pytest.mark.parametrize("keep", [0.1, 0.3, 0.6])
def test_truncated_pdf_is_refused_with_a_reason(tmp_path: Path, keep: float) -> None:
    full = make_pdf(tmp_path / "full.pdf", ["page one", "page two"]).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(full[: int(len(full) * keep)])
    with pytest.raises(DocumentError, match="damaged, truncated or not a PDF") as caught:
        _read(path)
    assert "(" in caught.value.message  # poppler's reason is quoted


@documents
def test_pdf_cut_anywhere_is_read_or_refused_never_anything_else(tmp_path: Path) -> None:
    full = make_pdf(tmp_path / "full.pdf", ["page one", "page two"]).read_bytes()
    outcomes = set()
    for index, keep in enumerate(range(5, len(full), max(1, len(full) // 12))):
        path = tmp_path / f"cut-{index}.pdf"
        path.write_bytes(full[:keep])
        try:
            content = _read(path)
        except DocumentError:
            outcomes.add("refused")
        else:  # poppler rebuilds a lost xref table when the objects are all there
            assert content.pages == ("page one", "page two")
            outcomes.add("read")
    assert "refused" in outcomes


@documents
def test_header_only_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "header.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 8)
    with pytest.raises(DocumentError, match="damaged, truncated or not a PDF"):
        _read(path)


@documents
def test_more_pages_than_allowed(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "long.pdf", [f"page {n}" for n in range(1, 6)])
    with pytest.raises(DocumentLimitError, match=r"the limit is 4 \(WCU_DOC_MAX_PAGES\); split the document"):
        _read(path, max_pages=4)
    assert _read(path, max_pages=5).page_count == 5
    assert _read(path, max_pages=6).page_count == 5


@documents
def test_timeout_is_a_document_timeout(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "slow.pdf", ["x"])
    with pytest.raises(DocumentTimeoutError, match="WCU_DOC_TIMEOUT_SECONDS"):
        _read(path, timeout=0.0005)


@documents
def test_a_given_scratch_dir_is_left_as_it_was(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _read(make_pdf(tmp_path / "a.pdf", ["a"]), scratch=scratch, limits=ToolLimits(memory_bytes=512 * 1024**2))
    assert list(scratch.iterdir()) == []  # pdftotext writes nothing (and may not: RLIMIT_FSIZE 0)


@documents
def test_metadata_is_unescaped_and_the_text_kept_as_written(tmp_path: Path) -> None:
    pages = ["a <b>&amp; \"q\" 'x' </pre> </head> end", "second <page>"]
    path = make_pdf(tmp_path / "markup.pdf", pages, title='Title </title><meta name="x">', author="A & B")
    content = _read(path)
    assert content.pages == tuple(pages)
    assert (content.title, content.author) == ('Title </title><meta name="x">', "A & B")


@documents
def test_text_longer_than_the_limit_stops_poppler_before_it_ends(tmp_path: Path) -> None:
    """Regression (issue 10, item 2): a small PDF of pages sharing one stream expanded without end."""
    path = shared_content_pdf(
        tmp_path / "shared.pdf", pages=2000, line="Lorem ipsum dolor sit amet " * 3, lines=90
    )
    assert path.stat().st_size < 400_000  # for ~14.6 million characters of text
    with pytest.raises(
        DocumentLimitError, match=r"longer than 50,000 characters.*WCU_DOC_MAX_TEXT_CHARS"
    ) as caught:
        _read(path, max_pages=2000, max_text_chars=50_000)
    # pdftotext was killed once its output passed the cap, not read to the end and measured.
    assert isinstance(caught.value.__cause__, ToolOutputLimitError)


@documents
def test_text_just_within_the_limit_is_read(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "two.pdf", ["a" * 40, "b" * 60])
    assert _read(path, max_text_chars=100).pages == ("a" * 40, "b" * 60)
    with pytest.raises(DocumentLimitError, match="WCU_DOC_MAX_TEXT_CHARS"):
        _read(path, max_text_chars=99)


@documents
def test_a_page_that_needs_more_memory_than_allowed_is_refused(tmp_path: Path) -> None:
    """Regression (issue 10, item 2): a small one-page PDF drove pdftotext to hundreds of MiB."""
    path = repeated_text_pdf(tmp_path / "repeat.pdf", repeats=40_000)
    assert path.stat().st_size < 20_000
    with pytest.raises(DocumentLimitError, match="WCU_POPPLER_MAX_MEMORY_BYTES"):
        _read(path, limits=ToolLimits(memory_bytes=96 * 1024 * 1024, cpu_seconds=60))


@documents
def test_poppler_out_of_cpu_time_is_refused_naming_the_setting(tmp_path: Path) -> None:
    path = repeated_text_pdf(tmp_path / "repeat.pdf", repeats=200_000)
    with pytest.raises(DocumentLimitError, match="WCU_POPPLER_MAX_CPU_SECONDS"):
        _read(path, limits=ToolLimits(memory_bytes=2 * 1024**3, cpu_seconds=1), timeout=120)


@documents
def test_image_pages_and_page_sizes(tmp_path: Path) -> None:
    scan = scanned_pdf(tmp_path / "scan.pdf", [text_image("one"), text_image("two")], encoding="inline")
    text = make_pdf(tmp_path / "text.pdf", ["no image here", "nor here"])

    async def body() -> tuple[set[int] | None, set[int] | None, dict[int, PageSize]]:
        limits = ToolLimits(memory_bytes=512 * 1024 * 1024)
        kwargs = {"timeout": 30.0, "scratch": tmp_path, "limits": limits}
        return (
            await pages_with_images(scan, 1, 2, **kwargs),  # type: ignore[arg-type]
            await pages_with_images(text, 1, 2, **kwargs),  # type: ignore[arg-type]
            await page_sizes(scan, 2, 2, **kwargs),  # type: ignore[arg-type]
        )

    assert asyncio.run(body()) == ({1, 2}, set(), {2: PageSize(612, 792)})


def test_parse_pdftotext_html_reads_metadata_and_pages() -> None:
    output = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" "x"><html xmlns="x">\n<head>\n'
        "<title>Part 1: &lt;Intro&gt; &amp; more</title>\n"
        '<meta name="Author" content="Zo\u00eb &quot;Z&quot; &apos;A&apos;"/>\n'
        '<meta name="Producer" content="LibreOffice 7.4"/>\n'
        "</head>\n<body>\n<pre>\n"
        "first page\nsecond line\n\n\f\fthird </pre> page\n\n\f"
        "</pre>\n</body>\n</html>\n"
    )
    meta, pages = parse_pdftotext_html(output)
    assert meta == {
        "Title": "Part 1: <Intro> & more",
        "Author": "Zo\u00eb \"Z\" 'A'",
        "Producer": "LibreOffice 7.4",
    }
    assert pages == ["first page\nsecond line", "", "third </pre> page"]


def test_bidi_controls_are_taken_out_of_the_pages() -> None:
    """Regression: the embedding marks pdftotext puts around right-to-left runs stuck to the words."""
    head = "<html>\n<head>\n</head>\n<body>\n<pre>\n"
    # As pdftotext writes "Hello" then an Arabic "hello world" from LibreOffice's PDF.
    hello, world = "\u0645\u0631\u062d\u0628\u0627", "\u0628\u0627\u0644\u0639\u0627\u0644\u0645"
    page = f"\u202b\u202a end\u202c{hello} {world} \u202aHello\u202c\u202c\n\u200ex\u2066\u2069 \u200f"
    _, pages = parse_pdftotext_html(head + page + "\n\n\f</pre>\n</body>\n</html>\n")
    # A mark between two words' letters was a run boundary: it becomes a space, the rest go.
    assert pages == [f" end {hello} {world} Hello\nx"]


# Every bidirectional formatting character of Unicode (UAX #9): LRM, RLM, LRE..RLO, LRI..PDI.
BIDI_CONTROLS = ["\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]


@pytest.mark.parametrize("control", BIDI_CONTROLS, ids=[f"U+{ord(c):04X}" for c in BIDI_CONTROLS])
@pytest.mark.parametrize("text", ["plain ascii", "caf\u00e9 cr\u00e8me", "it\u2019s \u201cquoted\u201d"])
def test_each_bidi_control_is_found_in_any_text(control: str, text: str) -> None:
    """Whatever the page's other characters (ASCII, Latin-1, beyond), one control is enough to be taken out."""
    head = "<html>\n<head>\n</head>\n<body>\n<pre>\n"
    _, pages = parse_pdftotext_html(f"{head}{text} a{control}b {control}end\n\n\f</pre>\n</body>\n</html>\n")
    assert pages == [f"{text} a b end"]


def test_a_form_feed_inside_a_line_is_not_a_page_end() -> None:
    head = "<html>\n<head>\n</head>\n<body>\n<pre>\n"
    meta, pages = parse_pdftotext_html(head + "\fa\fb\n\n\fc\x00d\n\n\f</pre>\n</body>\n</html>\n")
    assert meta == {}
    assert pages == ["", "a b", "cd"]


def test_cut_output_is_refused() -> None:
    with pytest.raises(DocumentError, match="incomplete"):
        parse_pdftotext_html("<html>\n<head>\n</head>\n<body>\n<pre>\nsome text\n\n\f")


def test_parse_page_sizes_and_image_pages() -> None:
    info = "Pages:           3\nPage    2 size:  612 x 792 pts (letter)\nPage    2 rot:   0\nPage    3 size:  841.89 x 1190.55 pts\n"
    assert parse_page_sizes(info) == {2: PageSize(612, 792), 3: PageSize(841.89, 1190.55)}
    listing = (
        "page   num  type   width height color comp bpc  enc interp  object ID x-ppi y-ppi size ratio\n"
        "--------------------------------------------------------------------------------------------\n"
        "   1     0 image    1700  2200  gray    1   8  image  no   [inline]     200   200    0B 0.0%\n"
        "  12     1 smask     100   100  gray    1   8  image  no        10  0   200   200 3104B 0.7%\n"
    )
    assert parse_image_pages(listing) == {1, 12}
