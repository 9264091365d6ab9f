"""detect_type from bytes, never names; check_docx_safe against broken zips and zip bombs."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest

from tests.factories import CONTENT_TYPES, PACKAGE_RELS, make_docx, make_garbage, make_pdf, make_zip_bomb
from wcu_ai.documents.detect import check_docx_safe, detect_type
from wcu_ai.errors import DocumentError, DocumentLimitError

MB = 1024 * 1024
MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"


def _package_structure(archive: zipfile.ZipFile) -> None:
    """What makes a zip a Word package: the main part named in _rels/.rels, typed in [Content_Types].xml."""
    archive.writestr("[Content_Types].xml", CONTENT_TYPES)
    archive.writestr("_rels/.rels", PACKAGE_RELS)


def _moved_main_part(src: Path, dst: Path, name: str, content_type: str = MAIN) -> Path:
    """`src` with its main part renamed to `name` (as Word allows) and typed `content_type`."""
    with zipfile.ZipFile(src) as original, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        for info in original.infolist():
            data = original.read(info)
            member = info.filename
            if member == "_rels/.rels":
                data = data.replace(b"word/document.xml", name.encode())
            elif member == "[Content_Types].xml":
                data = data.replace(b"/word/document.xml", b"/" + name.encode()).replace(
                    MAIN.encode(), content_type.encode()
                )
            elif member == "word/document.xml":
                member = name
            elif member == "word/_rels/document.xml.rels":
                member = f"{name.rpartition('/')[0]}/_rels/{name.rpartition('/')[2]}.rels"
            out.writestr(member, data)
    return dst


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


def test_zip_with_a_word_document_part_but_no_package_structure_is_none(tmp_path: Path) -> None:
    path = tmp_path / "bare.docx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("word/document.xml", "<w:document/>")
    assert detect_type(path) is None


def test_main_part_named_elsewhere_is_a_docx(tmp_path: Path) -> None:
    """Word allows any name for the main part; only _rels/.rels says which it is (issue 10, item 12)."""
    moved = _moved_main_part(
        make_docx(tmp_path / "a.docx", ["moved"]), tmp_path / "moved.docx", "content/main.xml"
    )
    with zipfile.ZipFile(moved) as archive:
        assert "word/document.xml" not in archive.namelist()
    assert detect_type(moved) == "docx"
    assert check_docx_safe(moved, 10 * MB) > 0


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.ms-word.document.macroEnabled.main+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
        "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
    ],
    ids=["docm", "dotx", "dotm"],
)
def test_macro_enabled_documents_and_templates_are_read_as_docx(tmp_path: Path, content_type: str) -> None:
    path = _moved_main_part(
        make_docx(tmp_path / "a.docx", ["x"]), tmp_path / "m.docx", "word/document.xml", content_type
    )
    assert detect_type(path) == "docx"


def test_an_office_package_that_is_not_word_is_none(tmp_path: Path) -> None:
    spreadsheet = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"
    path = _moved_main_part(
        make_docx(tmp_path / "a.docx", ["x"]), tmp_path / "book.xlsx", "xl/workbook.xml", spreadsheet
    )
    assert detect_type(path) is None
    with pytest.raises(DocumentError, match="not a Word document"):
        check_docx_safe(path, 10 * MB)


def test_a_missing_main_part_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hollow.docx"
    with zipfile.ZipFile(path, "w") as archive:
        _package_structure(archive)
    assert detect_type(path) is None
    with pytest.raises(DocumentError, match=r"main part 'word/document\.xml'"):
        check_docx_safe(path, 10 * MB)


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
        _package_structure(archive)
        archive.writestr("word/document.xml", random.Random(1).randbytes(3 * MB))
    data = bytearray(path.read_bytes())
    true_size = (3 * MB).to_bytes(4, "little")
    assert data.count(true_size) == 2  # the local header and the central directory entry
    path.write_bytes(bytes(data).replace(true_size, (1024).to_bytes(4, "little")))
    with pytest.raises(DocumentError, match="damaged"):
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
        _package_structure(archive)
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
    with pytest.raises(DocumentError, match="not a Word document"):
        check_docx_safe(path, 10 * MB)


def test_a_part_over_the_part_limit_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    path = tmp_path / "big-part.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        _package_structure(archive)
        archive.writestr("word/document.xml", "<w:document/>")
        archive.writestr("word/media/image1.bin", random.Random(2).randbytes(3 * MB))
    with pytest.raises(DocumentLimitError, match=r"word/media/image1\.bin.*WCU_DOCX_MAX_PART_BYTES"):
        check_docx_safe(path, 10 * MB, max_part_bytes=2 * MB)
    assert check_docx_safe(path, 10 * MB, max_part_bytes=4 * MB) > 3 * MB


def test_an_oversized_content_types_part_is_refused_unread(tmp_path: Path) -> None:
    """The attack's 113 MB [Content_Types].xml, scaled down: the structure parts have a small limit of their own."""
    path = tmp_path / "types.docx"
    overrides = "".join(
        f'<Override PartName="/x/{n}.xml" ContentType="application/xml"/>' for n in range(70_000)
    )
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES.replace("</Types>", overrides + "</Types>"))
        archive.writestr("_rels/.rels", PACKAGE_RELS)
        archive.writestr("word/document.xml", "<w:document/>")
    # It is a Word package as far as can be told, so the upload is taken and parsing says why not.
    assert detect_type(path) == "docx"
    with pytest.raises(DocumentLimitError, match=r"\[Content_Types\]\.xml is \d+ bytes"):
        check_docx_safe(path, 100 * MB)


def test_two_members_with_one_name_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.docx"
    with zipfile.ZipFile(path, "w") as archive:
        _package_structure(archive)
        archive.writestr("word/document.xml", "<w:document/>")
        with pytest.warns(UserWarning, match="Duplicate name"):
            archive.writestr("word/document.xml", "<w:document>the other one</w:document>")
    with pytest.raises(DocumentLimitError, match=r"two files named 'word/document\.xml'"):
        check_docx_safe(path, 10 * MB)
