"""read_pdf with the real poppler on PDFs the tests write."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.factories import make_pdf
from wcu_ai.documents.pdf import PdfContent, _split_pages, parse_pdfinfo, read_pdf
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
)

documents = pytest.mark.documents


def _read(
    path: Path, *, max_pages: int = 100, timeout: float = 30, scratch: Path | None = None
) -> PdfContent:
    return asyncio.run(read_pdf(path, max_pages=max_pages, timeout=timeout, scratch_dir=scratch))


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
    assert content.encrypted is False


@documents
def test_empty_page_keeps_its_place(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "gap.pdf", ["one", "", "three", ""])
    content = _read(path)
    assert content.page_count == 4
    assert content.pages == ("one", "", "three", "")


@documents
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
    assert content.encrypted is True
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
    with pytest.raises(DocumentLimitError, match="5 pages; the limit is 4"):
        _read(path, max_pages=4)
    assert _read(path, max_pages=5).page_count == 5


@documents
def test_timeout_is_a_document_timeout(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "slow.pdf", ["x"])
    with pytest.raises(DocumentTimeoutError, match="WCU_DOC_TIMEOUT_SECONDS"):
        _read(path, timeout=0.0005)


@documents
def test_scratch_dir_is_left_as_given_and_default_one_is_removed(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    _read(make_pdf(tmp_path / "a.pdf", ["a"]), scratch=scratch)
    assert scratch.is_dir()


def test_parse_pdfinfo_reads_fields_with_colons() -> None:
    output = (
        "Title:           Part 1: Intro\n"
        "Author:          \n"
        "Producer:        LibreOffice 7.4\n"
        "Pages:           12\n"
        "Encrypted:       yes (print:yes copy:no change:no addNotes:no algorithm:AES-256)\n"
    )
    info = parse_pdfinfo(output)
    assert (info.page_count, info.title, info.author, info.producer, info.encrypted) == (
        12,
        "Part 1: Intro",
        None,
        "LibreOffice 7.4",
        True,
    )


def test_parse_pdfinfo_without_pages_is_refused() -> None:
    with pytest.raises(DocumentError, match="page count"):
        parse_pdfinfo("Title: x\n")


def test_split_pages_on_form_feeds() -> None:
    assert _split_pages("a\n\fb\n\f\f", 3) == ["a", "b", ""]
    assert _split_pages("a\x00b\f", 1) == ["ab"]
    # A page whose own text holds a form feed: the count disagrees, so read page by page.
    assert _split_pages("a\fstill a\fb\f", 2) is None
