"""detect_type from bytes, never names; check_docx_safe against broken zips and zip bombs."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from tests.factories import make_docx, make_garbage, make_pdf, make_zip_bomb
from wcu_ai.documents.detect import check_docx_safe, detect_type
from wcu_ai.errors import DocumentError, DocumentLimitError

MB = 1024 * 1024


def test_pdf_is_detected_by_header_whatever_its_name(tmp_path: Path) -> None:
    assert detect_type(make_pdf(tmp_path / "report.docx", ["text"])) == "pdf"


def test_pdf_header_after_leading_junk_within_1024_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk-first"
    path.write_bytes(b"\n" * 1000 + make_pdf(tmp_path / "a.pdf", ["x"]).read_bytes())
    assert detect_type(path) == "pdf"


def test_pdf_header_past_1024_bytes_is_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "too-late.pdf"
    path.write_bytes(b" " * 1024 + b"%PDF-1.4\n")
    assert detect_type(path) is None


def test_docx_is_detected_by_its_zip_content(tmp_path: Path) -> None:
    assert detect_type(make_docx(tmp_path / "scan.pdf", ["hello"])) == "docx"


@pytest.mark.parametrize(
    "content",
    [b"", b"hello world", b"PK\x03\x04 not really a zip", b"%PD", b"\x89PNG\r\n\x1a\n" + b"\0" * 100],
    ids=["empty", "text", "fake-zip-magic", "short-header", "png"],
)
def test_other_content_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.docx"
    path.write_bytes(content)
    assert detect_type(path) is None


def test_garbage_named_docx_is_none(tmp_path: Path) -> None:
    assert detect_type(make_garbage(tmp_path / "garbage.docx")) is None


def test_zip_without_word_document_is_none(tmp_path: Path) -> None:
    path = tmp_path / "sheet.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
    assert detect_type(path) is None


def test_truncated_docx_is_none(tmp_path: Path) -> None:
    full = make_docx(tmp_path / "full.docx", ["hello"]).read_bytes()
    path = tmp_path / "cut.docx"
    path.write_bytes(full[: len(full) // 2])
    assert detect_type(path) is None


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert detect_type(tmp_path / "nope") is None


def test_safe_docx_passes_and_reports_its_uncompressed_size(tmp_path: Path) -> None:
    path = make_docx(tmp_path / "ok.docx", ["hello", "world"])
    with zipfile.ZipFile(path) as archive:
        expected = sum(info.file_size for info in archive.infolist())
    assert check_docx_safe(path, 10 * MB) == expected


def test_zip_bomb_over_the_declared_limit_is_refused(tmp_path: Path) -> None:
    bomb = make_zip_bomb(tmp_path / "bomb.docx", 20 * MB)
    assert bomb.stat().st_size < MB
    with pytest.raises(DocumentLimitError, match="WCU_DOCX_MAX_UNCOMPRESSED_BYTES"):
        check_docx_safe(bomb, 10 * MB)


def test_zip_bomb_under_the_limit_is_refused_by_its_ratio(tmp_path: Path) -> None:
    bomb = make_zip_bomb(tmp_path / "bomb.docx", 20 * MB)
    with pytest.raises(DocumentLimitError, match="zip bomb"):
        check_docx_safe(bomb, 200 * MB)


def test_sizes_that_lie_are_caught_while_inflating(tmp_path: Path) -> None:
    # Incompressible content, so no ratio check fires; the headers then claim 1 kB.
    path = tmp_path / "liar.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", random.Random(1).randbytes(3 * MB))
    data = bytearray(path.read_bytes())
    true_size = (3 * MB).to_bytes(4, "little")
    assert data.count(true_size) == 2  # the local header and the central directory entry
    path.write_bytes(bytes(data).replace(true_size, (1024).to_bytes(4, "little")))
    with pytest.raises(DocumentError):
        check_docx_safe(path, 2 * MB)


def test_too_many_members_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "many.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
        for index in range(10_001):
            archive.writestr(f"word/media/{index}.bin", b"")
    with pytest.raises(DocumentLimitError, match="10002 files"):
        check_docx_safe(path, 10 * MB)


def test_broken_zip_is_a_document_error(tmp_path: Path) -> None:
    full = make_docx(tmp_path / "full.docx", ["hello"]).read_bytes()
    path = tmp_path / "cut.docx"
    path.write_bytes(full[: len(full) - 100])
    with pytest.raises(DocumentError, match="damaged"):
        check_docx_safe(path, 10 * MB)


def test_corrupted_member_fails_its_crc(tmp_path: Path) -> None:
    path = tmp_path / "flipped.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("word/document.xml", b"<w:document>" + b"a" * 1000 + b"</w:document>")
    data = bytearray(path.read_bytes())
    data[data.index(b"aaaa")] = ord("b")
    path.write_bytes(bytes(data))
    with pytest.raises(DocumentError, match="damaged"):
        check_docx_safe(path, 10 * MB)


def test_zip_that_is_not_a_docx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("content.xml", "<office/>")
    with pytest.raises(DocumentError, match=r"no word/document\.xml"):
        check_docx_safe(path, 10 * MB)
