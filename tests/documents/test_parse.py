"""parse_document end to end with the real tools: round trips, refusals, limits, no leftovers."""

from __future__ import annotations

import asyncio
import sys
import traceback
from pathlib import Path

import pytest

from tests.factories import make_docx, make_garbage, make_pdf, make_zip_bomb
from tests.hostile_docx import edit_package
from tests.pdf_bytes import dense_page_pdf
from wcu_ai.documents import detect, ooxml
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.parse import DocumentLimits, ParsedDocument, parse_document
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolMissingError,
)
from wcu_ai.settings import Settings

pytestmark = pytest.mark.documents

LIMITS = DocumentLimits(timeout_seconds=60)


def _parse(
    path: Path,
    work_dir: Path,
    converter: OfficeConverter | None = None,
    limits: DocumentLimits = LIMITS,
    **kwargs: object,
) -> ParsedDocument:
    return asyncio.run(parse_document(path, converter=converter, limits=limits, work_dir=work_dir, **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def work_dir(tmp_path: Path) -> Path:
    return tmp_path / "work"


def test_pdf_round_trip(tmp_path: Path, work_dir: Path) -> None:
    pages = ["The invoice total is 1,250 euros.", "Payment is due within thirty days.", "Signed: Åsa"]
    path = make_pdf(tmp_path / "invoice.pdf", pages, title="Invoice 42", author="Billing")
    parsed = _parse(path, work_dir)
    assert parsed.kind == "pdf"
    assert parsed.page_count == 3
    assert parsed.pages == tuple(pages)
    assert (parsed.title, parsed.author, parsed.producer) == ("Invoice 42", "Billing", "wcu_ai tests")
    assert parsed.source_bytes == parsed.pdf_bytes == path.stat().st_size
    assert parsed.text == "\n\n".join(pages)
    assert parsed.text_chars == sum(map(len, pages))
    assert [(c.page, c.ordinal, c.text) for c in parsed.chunks] == [
        (n + 1, n, t) for n, t in enumerate(pages)
    ]
    assert list(work_dir.iterdir()) == []


def test_docx_round_trip(tmp_path: Path, work_dir: Path, converter: OfficeConverter) -> None:
    pages = [
        "Quarterly report.\n\nRevenue grew in every region.",
        "Outlook: the board expects steady growth.",
        "Appendix with the numbers.",
    ]
    path = make_docx(tmp_path / "report.docx", pages, title="Q3 Report", author="Finance Team")
    parsed = _parse(path, work_dir, converter)
    assert parsed.kind == "docx"
    assert parsed.page_count == 3
    # Word paragraphs become lines: python-docx's default style has no space between them.
    assert parsed.pages == (
        "Quarterly report.\nRevenue grew in every region.",
        "Outlook: the board expects steady growth.",
        "Appendix with the numbers.",
    )
    assert (parsed.title, parsed.author) == ("Q3 Report", "Finance Team")
    assert parsed.producer is not None
    assert parsed.producer.startswith("LibreOffice")
    assert parsed.source_bytes == path.stat().st_size
    assert parsed.pdf_bytes > 0
    assert {c.page for c in parsed.chunks} == {1, 2, 3}
    assert list(work_dir.iterdir()) == []


def test_long_pages_are_chunked_with_page_numbers(tmp_path: Path, work_dir: Path) -> None:
    sentence = "Search should find the page where the needle appears. "
    pages = [sentence * 30, sentence * 10 + "The golden needle is here.", sentence * 30]
    parsed = _parse(make_pdf(tmp_path / "long.pdf", pages), work_dir, max_chars=400, overlap=60)
    assert all(len(c.text) <= 400 for c in parsed.chunks)
    assert [c.page for c in parsed.chunks if "golden needle" in c.text] == [2]


def test_docx_without_converter_is_a_programming_error(tmp_path: Path, work_dir: Path) -> None:
    with pytest.raises(ValueError, match="OfficeConverter"):
        _parse(make_docx(tmp_path / "a.docx", ["x"]), work_dir)


def test_password_protected_pdf(tmp_path: Path, work_dir: Path) -> None:
    path = make_pdf(tmp_path / "locked.pdf", ["secret"], user_password="pw")
    with pytest.raises(EncryptedDocumentError, match="password-protected"):
        _parse(path, work_dir)
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.pdf", b"", "empty"),
        ("garbage.docx", None, "neither a PDF nor a DOCX"),
        ("text.pdf", b"just some text\n", "neither a PDF nor a DOCX"),
        ("broken.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog", "damaged, truncated or not a PDF"),
    ],
)
def test_unusable_files_fail_with_a_reason(
    tmp_path: Path, work_dir: Path, converter: OfficeConverter, name: str, content: bytes | None, reason: str
) -> None:
    path = tmp_path / name
    if content is None:
        make_garbage(path)
    else:
        path.write_bytes(content)
    with pytest.raises(DocumentError, match=reason):
        _parse(path, work_dir, converter)
    assert not work_dir.exists() or list(work_dir.iterdir()) == []


def test_truncated_docx_is_not_a_docx(tmp_path: Path, work_dir: Path, converter: OfficeConverter) -> None:
    full = make_docx(tmp_path / "full.docx", ["hello"]).read_bytes()
    path = tmp_path / "cut.docx"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DocumentError, match="neither a PDF nor a DOCX"):
        _parse(path, work_dir, converter)


def test_zip_bomb_is_refused_before_libreoffice(
    tmp_path: Path, work_dir: Path, converter: OfficeConverter
) -> None:
    bomb = make_zip_bomb(tmp_path / "bomb.docx", 30 * 1024 * 1024)
    limits = DocumentLimits(timeout_seconds=60, docx_max_uncompressed_bytes=20 * 1024 * 1024)
    with pytest.raises(DocumentLimitError, match="uncompressed"):
        _parse(bomb, work_dir, converter, limits)
    assert not converter.profile_dir.exists()  # soffice never ran
    assert list(work_dir.iterdir()) == []


def test_declared_kind_must_match_the_bytes(tmp_path: Path, work_dir: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", ["x"])
    with pytest.raises(DocumentError, match="declared DOCX but its content is PDF"):
        _parse(path, work_dir, kind="docx")
    assert _parse(path, work_dir, kind="pdf").page_count == 1


def test_limits_on_input_size_pages_and_pdf_size(tmp_path: Path, work_dir: Path) -> None:
    path = make_pdf(tmp_path / "a.pdf", ["one", "two", "three"])
    size = path.stat().st_size
    with pytest.raises(DocumentLimitError, match="WCU_UPLOAD_MAX_BYTES"):
        _parse(path, work_dir, limits=DocumentLimits(max_input_bytes=size - 1))
    with pytest.raises(DocumentLimitError, match="WCU_DOC_MAX_PAGES"):
        _parse(path, work_dir, limits=DocumentLimits(max_pages=2))
    with pytest.raises(DocumentLimitError, match="WCU_DOC_MAX_PDF_BYTES"):
        _parse(path, work_dir, limits=DocumentLimits(max_pdf_bytes=size - 1))


def test_a_page_with_more_characters_than_allowed_is_refused(tmp_path: Path, work_dir: Path) -> None:
    """Regression (issue 10, item 2): one page's content stream held any number of characters."""
    path = dense_page_pdf(tmp_path / "dense.pdf")
    assert path.stat().st_size < 20_000
    limits = DocumentLimits(timeout_seconds=60, max_page_chars=20_000)
    with pytest.raises(
        DocumentLimitError,
        match=r"Page 1 has [\d,]+ characters; the limit per page is 20,000 \(WCU_DOC_MAX_PAGE_CHARS\)",
    ):
        _parse(path, work_dir, limits=limits)
    assert list(work_dir.iterdir()) == []
    parsed = _parse(path, work_dir, limits=DocumentLimits(timeout_seconds=60, max_page_chars=100_000))
    assert 20_000 < parsed.text_chars <= 100_000


def test_more_chunks_than_allowed_are_refused(tmp_path: Path, work_dir: Path) -> None:
    sentence = "Chunks are bounded per document, like pages and characters. "
    path = make_pdf(tmp_path / "chunky.pdf", [sentence * 20] * 3)
    parsed = _parse(path, work_dir, max_chars=400, overlap=50)
    count = len(parsed.chunks)
    with pytest.raises(DocumentLimitError, match=rf"more than {count - 1} chunks.*WCU_DOC_MAX_CHUNKS"):
        fewer = DocumentLimits(timeout_seconds=60, max_chunks=count - 1)
        _parse(path, work_dir, limits=fewer, max_chars=400, overlap=50)
    limits = DocumentLimits(timeout_seconds=60, max_chunks=count)
    assert len(_parse(path, work_dir, limits=limits, max_chars=400, overlap=50).chunks) == count


def test_converted_pdf_over_the_limit(tmp_path: Path, work_dir: Path, converter: OfficeConverter) -> None:
    path = make_docx(tmp_path / "a.docx", ["some text"])
    with pytest.raises(DocumentLimitError, match="WCU_DOC_MAX_PDF_BYTES"):
        _parse(path, work_dir, converter, DocumentLimits(timeout_seconds=60, max_pdf_bytes=100))
    assert list(work_dir.iterdir()) == []


def test_time_limit_covers_the_whole_document(
    tmp_path: Path, work_dir: Path, converter: OfficeConverter
) -> None:
    path = make_docx(tmp_path / "a.docx", ["Lorem ipsum dolor sit amet. " * 50] * 60)
    with pytest.raises(DocumentTimeoutError):
        _parse(path, work_dir, converter, DocumentLimits(timeout_seconds=0.3))
    assert list(work_dir.iterdir()) == []


def test_limits_from_settings() -> None:
    settings = Settings(
        doc_max_pages=7,
        doc_timeout_seconds=12.5,
        docx_max_uncompressed_bytes=1000,
        doc_max_pdf_bytes=2000,
        upload_max_bytes=3000,
    )
    assert DocumentLimits.from_settings(settings) == DocumentLimits(
        max_pages=7,
        timeout_seconds=12.5,
        docx_max_uncompressed_bytes=1000,
        max_pdf_bytes=2000,
        max_input_bytes=3000,
    )


def test_missing_poppler_is_a_tool_missing_error(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = make_pdf(tmp_path / "a.pdf", ["x"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ToolMissingError, match="pdftotext is not on PATH"):
        _parse(path, work_dir)
    assert list(work_dir.iterdir()) == []


@pytest.mark.parametrize("warm", [True, False], ids=["warm", "cold"])
def test_missing_libreoffice_is_a_tool_missing_error(
    tmp_path: Path, work_dir: Path, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    path = make_docx(tmp_path / "a.docx", ["x"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with (
        OfficeConverter(0, tmp_path / "office", warm=warm) as converter,
        pytest.raises(ToolMissingError, match="soffice is not on PATH"),
    ):
        _parse(path, work_dir, converter)
    assert list(work_dir.iterdir()) == []


def test_cancelled_during_the_package_rewrite_it_stops_and_leaves_nothing(
    tmp_path: Path, work_dir: Path, converter: OfficeConverter
) -> None:
    import random

    # Tens of megabytes of XML, varied enough not to look like a zip bomb: seconds of rewriting.
    words = random.Random(3)
    paragraphs = "".join(
        f"<w:p><w:r><w:t>{words.randrange(10**12)} {words.randrange(10**12)}</w:t></w:r></w:p>"
        for _ in range(400_000)
    )
    big = edit_package(make_docx(tmp_path / "a.docx", ["big"]), tmp_path / "big.docx", body=paragraphs)
    limits = DocumentLimits(timeout_seconds=600, docx_max_part_bytes=256 * 1024 * 1024)

    async def scenario() -> None:
        task = asyncio.create_task(parse_document(big, converter=converter, limits=limits, work_dir=work_dir))
        for _ in range(400):  # until the rewrite is writing its copy
            if list(work_dir.glob("wcu-parse-*/source.docx")):
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The worker thread cannot be cancelled; it was told to stop and had stopped by now,
        # rather than rewriting on, unseen, while the slot takes its next document.
        assert _threads_running(ooxml.__file__, detect.__file__) == []

    asyncio.run(scenario())
    assert list(work_dir.iterdir()) == []
    assert not converter.profile_dir.exists()  # LibreOffice was never reached


def _threads_running(*files: str) -> list[int]:
    """Threads with a frame of one of `files` on their stack."""
    return [
        ident
        for ident, frame in sys._current_frames().items()
        if any(f.f_code.co_filename in files for f, _ in traceback.walk_stack(frame))
    ]
