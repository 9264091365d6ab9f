"""ooxml: a package's main part from its structure, and the rewritten copy that points nowhere.

The rewrite is judged on its output, not on its bookkeeping: after it, no byte of the package
(nested packages unpacked) may name the logging server, the local files or /proc, whatever the
construct; a clean document must come out unchanged; and LibreOffice must read the same text
from a feature-rich document before and after.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import time
import zipfile
from pathlib import Path

import pytest

from tests.factories import make_docx
from tests.hostile_docx import CONSTRUCTS, Targets, build, edit_package, own_text
from wcu_ai.documents.ooxml import DOCX_MAIN_TYPE, PackageLimits, field_is_safe, main_part, rewrite_package
from wcu_ai.errors import DocumentError, DocumentLimitError, DocumentTimeoutError

MB = 1024 * 1024
LIMITS = PackageLimits(max_uncompressed_bytes=64 * MB, max_part_bytes=16 * MB, max_xml_depth=128)
W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def _targets(tmp: Path) -> Targets:
    return Targets(
        base_url="http://127.0.0.1:48213",
        secret_svg=tmp / "secret-area" / "secret.svg",
        secret_docx=tmp / "secret-area" / "secret.docx",
        secret_text=tmp / "secret-area" / "secret.txt",
        secret_html=tmp / "secret-area" / "secret.html",
        open_pdf_fd_path="/proc/4242/fd/7",
    )


def _rewrite(
    src: Path, tmp: Path, limits: PackageLimits = LIMITS, timeout: float = 60
) -> tuple[Path, dict[str, int]]:
    dst = tmp / f"{src.stem}-rewritten.docx"
    report = rewrite_package(
        src, dst, limits=limits, deadline=time.monotonic() + timeout, timeout_seconds=timeout, scratch_dir=tmp
    )
    return dst, report.as_dict()


def _all_bytes(data: bytes) -> bytes:
    """Every member of a zip, unpacked, nested zips and gzip members too."""
    out = bytearray()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            member = archive.read(info)
            if member.startswith(b"PK\x03\x04"):
                member = _all_bytes(member)
            elif member.startswith(b"\x1f\x8b"):
                member = gzip.decompress(member)
            out += info.filename.encode() + b"\n" + member + b"\n"
    return bytes(out)


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_no_byte_of_the_rewritten_package_points_outside_it(tmp_path: Path, construct: str) -> None:
    targets = _targets(tmp_path)
    src = build(construct, tmp_path / f"{construct}.docx", targets)
    outside = [
        b"127.0.0.1:48213",
        str(targets.secret_svg.parent).encode(),
        targets.open_pdf_fd_path.encode(),
        b"file:",
    ]
    before = _all_bytes(src.read_bytes())
    assert any(needle in before for needle in outside), "the construct points nowhere to begin with"
    dst, report = _rewrite(src, tmp_path)
    after = _all_bytes(dst.read_bytes())
    assert [needle for needle in outside if needle in after] == [], report
    assert own_text(construct).encode() in after
    with zipfile.ZipFile(dst) as archive:
        assert main_part(archive).content_type == DOCX_MAIN_TYPE


def test_a_clean_document_comes_out_byte_for_byte(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "clean.docx", ["First page", "Second page"], title="T", author="A")
    dst, report = _rewrite(src, tmp_path)
    assert not any(report.values()), report
    with zipfile.ZipFile(src) as before, zipfile.ZipFile(dst) as after:
        assert before.namelist() == after.namelist()
        for name in before.namelist():
            assert before.read(name) == after.read(name), name


def _fields_document(tmp_path: Path, body: str) -> Path:
    return edit_package(
        make_docx(tmp_path / "fields-base.docx", ["fields"]), tmp_path / "fields.docx", body=body
    )


def _field(instruction: str, result: str = "cached result") -> str:
    return (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve">{instruction}</w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        f'<w:r><w:t>{result}</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def _document_xml(path: Path) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read("word/document.xml").decode()


def test_fields_that_compute_from_the_document_stay_live(tmp_path: Path) -> None:
    body = (
        _field(" PAGE \\* MERGEFORMAT ")
        + _field(' TOC \\o "1-3" \\h \\z \\u ')
        + _field(' HYPERLINK "https://example.com/x" ')
        + _field(' HYPERLINK \\l "_Toc1" ')
        + _field(" =2+2 ")
    )
    src = _fields_document(tmp_path, body)
    dst, report = _rewrite(src, tmp_path)
    assert report["fields_neutralised"] == 0
    assert _document_xml(dst) == _document_xml(src)


@pytest.mark.parametrize(
    "body",
    [
        _field(' INCLUDETEXT "/etc/hostname" '),
        _field(' HYPERLINK "/etc/hostname" '),
        _field(' HYPERLINK "file:///etc/hostname" '),
        _field(' "INCLUDEPICTURE" "http://127.0.0.1:9/x" '),
        _field(' includepicture "http://127.0.0.1:9/x" '),
        _field(" SOMETHINGNEW arg "),
        # The code in plain text runs, where LibreOffice reads it as code too.
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:t>INCLUDETEXT "/etc/hostname"</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>cached result</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>',
        # A harmless keyword first, the loading one in a nested field of its code.
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>PAGE </w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>INCLUDETEXT "/etc/hostname"</w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        '<w:r><w:t>cached result</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>',
        # Deleted code that a reader may or may not count.
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:del w:id="1" w:author="a"><w:r>'
        "<w:delInstrText>PAGE </w:delInstrText></w:r></w:del>"
        '<w:r><w:instrText>INCLUDETEXT "/etc/hostname"</w:instrText></w:r>'
        '<w:r><w:fldChar w:fldCharType="separate"/></w:r><w:r><w:t>cached result</w:t></w:r>'
        '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>',
    ],
    ids=[
        "includetext",
        "hyperlink-path",
        "hyperlink-file",
        "quoted",
        "lower-case",
        "unknown",
        "in-text",
        "nested",
        "deleted",
    ],
)
def test_other_fields_keep_their_result_and_lose_their_code(tmp_path: Path, body: str) -> None:
    dst, report = _rewrite(_fields_document(tmp_path, body), tmp_path)
    xml = _document_xml(dst)
    assert report["fields_neutralised"] >= 1
    assert "cached result" in xml
    assert "/etc/hostname" not in xml and "127.0.0.1" not in xml
    assert "WCUAIREMOVEDFIELD" in xml


def test_fields_left_unbalanced_across_alternate_content_are_all_reduced_to_their_result(
    tmp_path: Path,
) -> None:
    body = (
        '<w:p><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        '<mc:Choice Requires="w14"><w:r><w:fldChar w:fldCharType="begin"/></w:r></mc:Choice>'
        "<mc:Fallback/></mc:AlternateContent>"
        '<w:r><w:t>INCLUDETEXT "/etc/hostname"</w:t></w:r><w:r><w:fldChar w:fldCharType="separate"/></w:r>'
        '<w:r><w:t>cached result</w:t></w:r><w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
        + _field(" PAGE ")
    )
    dst, _ = _rewrite(_fields_document(tmp_path, body), tmp_path)
    xml = _document_xml(dst)
    assert "fldChar" not in xml and "instrText" not in xml  # not one field left for a reader to misread
    assert "cached result" in xml


def test_balanced_fields_in_text_boxes_and_alternate_content_stay_live(tmp_path: Path) -> None:
    box = f"<w:txbxContent>{_field(' PAGE ')}</w:txbxContent>"
    body = (
        '<w:p><w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        f'<mc:Choice Requires="wps">{box}</mc:Choice><mc:Fallback>{box}</mc:Fallback>'
        "</mc:AlternateContent></w:r></w:p>"
    )
    src = _fields_document(tmp_path, body)
    dst, report = _rewrite(src, tmp_path)
    assert report["fields_neutralised"] == 0
    assert _document_xml(dst) == _document_xml(src)


@pytest.mark.parametrize(
    ("instruction", "safe"),
    [
        (" PAGE ", True),
        ("page", True),
        (" MERGEFIELD Name \\* MERGEFORMAT ", True),
        (' HYPERLINK "http://x" \\o "tip" ', True),
        (' HYPERLINK "mailto:a@b" ', True),
        (' HYPERLINK "\\\\server\\share" ', False),
        (' HYPERLINK "x.docx" ', False),
        (' HYPERLINK "http://x" \\l "a" "c:\\x" ', False),
        (" INCLUDEPICTURE x ", False),
        (" DDEAUTO a b ", False),
        (" MACROBUTTON m x ", False),
        (" FILENAME \\p ", False),
        ("", True),
    ],
)
def test_field_is_safe(instruction: str, safe: bool) -> None:
    assert field_is_safe(instruction) is safe


def test_a_dtd_in_a_document_part_refuses_the_document(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "a.docx", ["x"])
    dtd = edit_package(
        src,
        tmp_path / "dtd.docx",
        edits={
            "word/styles.xml": lambda data: data.replace(b"?>", b'?><!DOCTYPE w:styles [<!ENTITY e "x">]>', 1)
        },
    )
    with pytest.raises(DocumentLimitError, match=r"word/styles\.xml declares a document type"):
        _rewrite(dtd, tmp_path)
    assert not (tmp_path / "dtd-rewritten.docx").exists()


def test_nesting_past_the_depth_limit_is_refused_with_the_setting_named(tmp_path: Path) -> None:
    deep = "<w:p><w:r><w:t>x</w:t></w:r></w:p>"
    for _ in range(50):
        deep = f"<w:tbl><w:tr><w:tc>{deep}</w:tc></w:tr></w:tbl>"
    src = edit_package(make_docx(tmp_path / "a.docx", ["x"]), tmp_path / "deep.docx", body=deep)
    with pytest.raises(DocumentLimitError, match="WCU_DOCX_MAX_XML_DEPTH"):
        _rewrite(src, tmp_path)
    _rewrite(src, tmp_path, PackageLimits(64 * MB, 16 * MB, max_xml_depth=256))  # within a larger limit


@pytest.mark.parametrize("wrap", ["plain", "gzip"])
def test_an_svg_with_a_dtd_is_replaced_not_refused(tmp_path: Path, wrap: str) -> None:
    svg = b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l "lol">]><svg xmlns="http://www.w3.org/2000/svg">&l;</svg>'
    data = gzip.compress(svg) if wrap == "gzip" else svg
    rel = (
        '<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"'
        ' Target="media/a.svgz"/>'
    )
    src = edit_package(
        make_docx(tmp_path / "a.docx", ["x"]),
        tmp_path / "svg.docx",
        rels=(rel,),
        parts={"word/media/a.svgz": data},
    )
    dst, report = _rewrite(src, tmp_path)
    assert report["images_replaced"] == 1
    with zipfile.ZipFile(dst) as archive:
        assert b"ENTITY" not in archive.read("word/media/a.svgz")


def test_an_svg_behind_a_bitmap_magic_is_still_inspected(tmp_path: Path) -> None:
    # "BM" is BMP's magic; LibreOffice still reads what follows as an SVG.
    svg = b'BM<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><image xlink:href="http://127.0.0.1:9/x.png"/></svg>'
    rel = (
        '<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"'
        ' Target="media/a.bmp"/>'
    )
    src = edit_package(
        make_docx(tmp_path / "a.docx", ["x"]),
        tmp_path / "svg.docx",
        rels=(rel,),
        parts={"word/media/a.bmp": svg},
    )
    dst, report = _rewrite(src, tmp_path)
    assert report["images_replaced"] == 1
    with zipfile.ZipFile(dst) as archive:
        assert b"127.0.0.1" not in archive.read("word/media/a.bmp")


def test_a_clean_svg_is_kept(tmp_path: Path) -> None:
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink"><defs><g id="a"/></defs>'
        '<use xlink:href="#a"/><rect fill="url(#a)"/><image xlink:href="data:image/png;base64,iVBORw0KGgo="/></svg>'
    )
    rel = (
        '<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"'
        ' Target="media/a.svg"/>'
    )
    src = edit_package(
        make_docx(tmp_path / "a.docx", ["x"]),
        tmp_path / "svg.docx",
        rels=(rel,),
        parts={"word/media/a.svg": svg},
    )
    _, report = _rewrite(src, tmp_path)
    assert report["images_replaced"] == 0


def test_macros_are_dropped_and_a_docm_becomes_a_docx(tmp_path: Path) -> None:
    docm_type = "application/vnd.ms-word.document.macroEnabled.main+xml"
    vba = (
        '<Relationship Id="rIdVba" Type="http://schemas.microsoft.com/office/2006/relationships/vbaProject"'
        ' Target="vbaProject.bin"/>'
    )
    src = edit_package(
        make_docx(tmp_path / "a.docx", ["macro document"]),
        tmp_path / "macro.docm",
        rels=(vba,),
        parts={"word/vbaProject.bin": b"\xd0\xcf\x11\xe0" + b"\0" * 508},
        edits={"[Content_Types].xml": lambda data: data.replace(DOCX_MAIN_TYPE.encode(), docm_type.encode())},
    )
    with zipfile.ZipFile(src) as archive:
        assert main_part(archive).content_type == docm_type.lower()
    dst, report = _rewrite(src, tmp_path)
    assert report["main_type_changed"] == 1 and report["parts_dropped"] == 1
    with zipfile.ZipFile(dst) as archive:
        assert main_part(archive).content_type == DOCX_MAIN_TYPE
        assert "word/vbaProject.bin" not in archive.namelist()
        assert b"vbaProject" not in archive.read("word/_rels/document.xml.rels")


def test_the_deadline_stops_the_rewrite(tmp_path: Path) -> None:
    src = make_docx(tmp_path / "a.docx", ["x"])
    with pytest.raises(DocumentTimeoutError, match="WCU_DOC_TIMEOUT_SECONDS"):
        rewrite_package(
            src,
            tmp_path / "out.docx",
            limits=LIMITS,
            deadline=time.monotonic() - 1,
            timeout_seconds=5,
            scratch_dir=tmp_path,
        )
    assert not (tmp_path / "out.docx").exists()


def test_a_part_that_is_not_xml_refuses_the_document_with_its_name(tmp_path: Path) -> None:
    src = edit_package(
        make_docx(tmp_path / "a.docx", ["x"]),
        tmp_path / "broken.docx",
        edits={"word/settings.xml": lambda _: b"\x00garbage"},
    )
    with pytest.raises(DocumentError, match=r"word/settings\.xml is not well-formed XML"):
        _rewrite(src, tmp_path)


# -- with LibreOffice ----------------------------------------------------------------------------------------


def _rich_document(tmp_path: Path) -> Path:
    """Headings, a table, a picture, a header and footer with PAGE, hyperlinks, a TOC field and a text box."""
    import docx
    from docx.shared import Inches

    png = tmp_path / "dot.png"
    png.write_bytes(
        bytes.fromhex(
            "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
            "1f15c4890000000d4944415478da63f8cfc0f01f0005000201e2210d2c0000000049454e44ae426082"
        )
    )
    document = docx.Document()
    document.add_heading("Quarterly report", level=1)
    document.add_paragraph("Revenue grew in the northern region.")
    table = document.add_table(rows=2, cols=2)
    for r, row in enumerate(table.rows):
        for c, cell in enumerate(row.cells):
            cell.text = f"cell {r}{c}"
    document.add_picture(str(png), width=Inches(0.5))
    document.sections[0].header.paragraphs[0].text = "Confidential header"
    document.sections[0].footer.paragraphs[0].text = "Footer text"
    path = tmp_path / "rich-base.docx"
    document.save(str(path))
    link = (
        '<Relationship Id="rIdWeb" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/hyperlink"'
        ' Target="https://example.com/report" TargetMode="External"/>'
    )
    box = (
        '<w:p><w:r><mc:AlternateContent xmlns:mc="http://schemas.openxmlformats.org/markup-compatibility/2006">'
        '<mc:Choice Requires="wps"><w:drawing><wp:anchor distT="0" distB="0" distL="0" distR="0" simplePos="0"'
        ' relativeHeight="1" behindDoc="0" locked="0" layoutInCell="1" allowOverlap="1"><wp:simplePos x="0" y="0"/>'
        '<wp:positionH relativeFrom="column"><wp:posOffset>0</wp:posOffset></wp:positionH>'
        '<wp:positionV relativeFrom="paragraph"><wp:posOffset>0</wp:posOffset></wp:positionV>'
        '<wp:extent cx="2000000" cy="500000"/><wp:wrapNone/><wp:docPr id="9" name="Box"/>'
        '<a:graphic xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
        '<a:graphicData uri="http://schemas.microsoft.com/office/word/2010/wordprocessingShape">'
        '<wps:wsp xmlns:wps="http://schemas.microsoft.com/office/word/2010/wordprocessingShape"><wps:cNvSpPr txBox="1"/>'
        '<wps:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="2000000" cy="500000"/></a:xfrm><a:prstGeom prst="rect"/></wps:spPr>'
        "<wps:txbx><w:txbxContent><w:p><w:r><w:t>Text box words</w:t></w:r></w:p></w:txbxContent></wps:txbx>"
        "<wps:bodyPr/></wps:wsp></a:graphicData></a:graphic></wp:anchor></w:drawing></mc:Choice>"
        '<mc:Fallback><w:pict><v:shape xmlns:v="urn:schemas-microsoft-com:vml" style="width:150pt;height:40pt">'
        "<v:textbox><w:txbxContent><w:p><w:r><w:t>Text box words</w:t></w:r></w:p></w:txbxContent></v:textbox>"
        "</v:shape></w:pict></mc:Fallback></mc:AlternateContent></w:r></w:p>"
    )
    body = (
        '<w:p><w:hyperlink r:id="rIdWeb"><w:r><w:t>the full report online</w:t></w:r></w:hyperlink></w:p>'
        + _field(" PAGE ", "1")
        + _field(' HYPERLINK "https://example.com/" ', "a field link")
        + box
    )
    return edit_package(path, tmp_path / "rich.docx", body=body, rels=(link,))


@pytest.mark.documents
def test_libreoffice_reads_the_same_text_before_and_after_the_rewrite(tmp_path: Path) -> None:
    from wcu_ai.documents.office import OfficeConverter
    from wcu_ai.documents.pdf import read_pdf

    src = _rich_document(tmp_path)
    dst, report = _rewrite(src, tmp_path)
    assert report["relationships_dropped"] == 1  # the web hyperlink: external, so it goes

    async def texts() -> list[tuple[str, ...]]:
        with OfficeConverter(0, tmp_path / "office") as converter:
            pages = []
            for path in (src, dst):
                pdf = await converter.convert_to_pdf(path, tmp_path / path.stem, timeout=120)
                pages.append((await read_pdf(pdf, max_pages=50, timeout=60, scratch_dir=tmp_path)).pages)
            return pages

    before, after = asyncio.run(texts())
    assert before == after
    joined = " ".join(" ".join(before).split())
    for words in (
        "Quarterly report",
        "cell 11",
        "Confidential header",
        "the full report online",
        "Text box words",
    ):
        assert words in joined
