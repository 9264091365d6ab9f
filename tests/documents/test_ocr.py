"""OCR of pages without a text layer, with the real pdftoppm and Tesseract on scans the tests draw."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.factories import make_pdf
from tests.pdf_bytes import ImageEncoding, scanned_pdf, text_image
from wcu_ai.documents.ocr import OcrOptions, ocr_pages, pages_without_text, render_dpi
from wcu_ai.documents.parse import DocumentLimits, ParsedDocument, parse_document
from wcu_ai.documents.pdf import PageSize
from wcu_ai.documents.process import ToolLimits
from wcu_ai.errors import DocumentError, DocumentLimitError, ToolMissingError

documents = pytest.mark.documents

SCAN_TEXT = "Invoice number 4711\nThe quarterly revenue grew in the northern region.\nGlaciers retreat."
SCAN_WORDS = {"invoice", "4711", "quarterly", "revenue", "northern", "region", "glaciers"}
POPPLER = ToolLimits(memory_bytes=512 * 1024 * 1024, cpu_seconds=60)


def words(text: str) -> set[str]:
    return {w.strip(".,").lower() for w in text.split()}


def _ocr(pdf: Path, numbers: list[int], scratch: Path, options: OcrOptions | None = None) -> dict[int, str]:
    return asyncio.run(
        ocr_pages(
            pdf,
            numbers,
            options=options or OcrOptions(),
            poppler_limits=POPPLER,
            max_page_chars=100_000,
            deadline=time.monotonic() + 120,
            scratch=scratch,
        )
    )


def _parse(path: Path, work_dir: Path, limits: DocumentLimits | None = None) -> ParsedDocument:
    return asyncio.run(
        parse_document(
            path, converter=None, limits=limits or DocumentLimits(timeout_seconds=120), work_dir=work_dir
        )
    )


@documents
@pytest.mark.parametrize("encoding", ["flate", "ccitt", "inline"])
def test_the_words_of_a_scanned_page_come_back(tmp_path: Path, encoding: ImageEncoding) -> None:
    """Regression (issue 10, item 11): image-only, fax-encoded and inline-image pages had no text."""
    pdf = scanned_pdf(tmp_path / "scan.pdf", [text_image(SCAN_TEXT)], encoding=encoding)
    texts = _ocr(pdf, [1], tmp_path)
    assert list(texts) == [1]
    assert words(texts[1]) >= SCAN_WORDS, texts[1]
    assert [p.name for p in tmp_path.iterdir()] == ["scan.pdf"]  # the page image is gone


@documents
def test_scanned_pages_are_read_and_flagged_and_text_pages_are_not_ocred(tmp_path: Path) -> None:
    pages = [text_image("Glaciers retreat every summer."), text_image(SCAN_TEXT)]
    # Page 1 has a text layer that says something else than its image: it must be kept as is.
    pdf = scanned_pdf(tmp_path / "mixed.pdf", pages, text_layers=["The text layer of page one wins.", None])
    parsed = _parse(pdf, tmp_path / "work")
    assert parsed.ocr_pages == (2,)
    assert parsed.pages[0] == "The text layer of page one wins."
    assert words(parsed.pages[1]) >= SCAN_WORDS
    assert [c.page for c in parsed.chunks] == [1, 2]
    assert list((tmp_path / "work").iterdir()) == []


@documents
def test_before_ocr_scanned_pages_were_empty_and_with_ocr_off_they_still_are(tmp_path: Path) -> None:
    pdf = scanned_pdf(tmp_path / "scan.pdf", [text_image(SCAN_TEXT)])
    limits = DocumentLimits(timeout_seconds=60, ocr=OcrOptions(enabled=False))
    parsed = _parse(pdf, tmp_path / "work", limits)
    assert (parsed.pages, parsed.ocr_pages, parsed.chunks) == (("",), (), ())


@documents
def test_blank_pages_are_not_ocred_and_do_not_count_against_the_budget(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "blank.pdf", ["", "", "x"])
    limits = DocumentLimits(timeout_seconds=60, ocr=OcrOptions(max_pages=1))
    parsed = _parse(pdf, tmp_path / "work", limits)
    assert (parsed.pages, parsed.ocr_pages) == (("", "", "x"), ())


@documents
def test_more_scanned_pages_than_allowed_are_refused_naming_the_setting(tmp_path: Path) -> None:
    image = text_image("page")
    pdf = scanned_pdf(tmp_path / "scans.pdf", [image, image, image], encoding="ccitt")
    limits = DocumentLimits(timeout_seconds=60, ocr=OcrOptions(max_pages=2))
    with pytest.raises(
        DocumentLimitError, match=r"3 pages without a text layer.*limited to 2.*WCU_OCR_MAX_PAGES"
    ):
        _parse(pdf, tmp_path / "work", limits)
    assert list((tmp_path / "work").iterdir()) == []


@documents
def test_missing_language_data_names_the_setting(tmp_path: Path) -> None:
    pdf = scanned_pdf(tmp_path / "scan.pdf", [text_image("words")], encoding="ccitt")
    with pytest.raises(DocumentError, match=r"'eng\+xqz'.*WCU_OCR_LANGUAGES"):
        _ocr(pdf, [1], tmp_path, OcrOptions(languages="eng+xqz"))


@documents
def test_tesseract_over_its_memory_limit_is_refused_naming_the_setting(tmp_path: Path) -> None:
    pdf = scanned_pdf(tmp_path / "scan.pdf", [text_image(SCAN_TEXT)], encoding="ccitt")
    with pytest.raises(DocumentLimitError, match="WCU_OCR_MAX_MEMORY_BYTES"):
        _ocr(pdf, [1], tmp_path, OcrOptions(memory_bytes=100 * 1024 * 1024))


@documents
def test_missing_tesseract_says_how_to_switch_ocr_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pdftotext", "pdfinfo", "pdfimages", "pdftoppm", "prlimit"):
        where = shutil.which(tool)
        assert where is not None
        os.symlink(where, bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    pdf = scanned_pdf(tmp_path / "scan.pdf", [text_image("words")], encoding="ccitt")
    with pytest.raises(ToolMissingError, match=r"tesseract is not on PATH.*WCU_OCR_ENABLED=false"):
        _parse(pdf, tmp_path / "work")


def test_pages_without_text_counts_visible_characters() -> None:
    assert pages_without_text(["", " \n\t ", "123456789", "1234567890", "Page 3"]) == [1, 2, 3, 5]


def test_pages_larger_than_a3_are_rendered_at_a_lower_resolution() -> None:
    assert render_dpi(PageSize(612, 792), 300) == 300  # letter
    assert render_dpi(PageSize(842, 1191), 300) == 300  # A3
    poster = PageSize(842 * 4, 1191 * 4)  # 16 times the area of A3: a quarter of the resolution
    assert render_dpi(poster, 300) == 75
    assert render_dpi(PageSize(144_000, 144_000), 300) == 2  # 2,000 inches square: 4,000 pixels a side
    assert render_dpi(PageSize(14_400_000, 14_400_000), 300) == 1
