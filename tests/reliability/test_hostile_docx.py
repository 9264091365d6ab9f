"""Hostile DOCX against the real API and runner (issue 10, items 1, 7 and 12).

Every construct of tests/hostile_docx.py is uploaded while a request-logging HTTP server listens
on 127.0.0.1 and local files hold unique markers (and the test process holds a PDF open, which a
document could read as /proc/<pid>/fd/<n>): no request may reach the server, no marker may come
back in the parsed text, and the document's own text must. Then the structural attacks that cost
a worker slot its whole time limit (deep nesting, a huge [Content_Types].xml, billion laughs in
an SVG) must fail at once with the limit named, and a DOCX whose main part is not
word/document.xml must parse.
"""

from __future__ import annotations

import os
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import missing_tools_or_fail
from tests.factories import CONTENT_TYPES, PACKAGE_RELS, make_docx, make_pdf
from tests.hostile_docx import CONSTRUCTS, LoggingServer, Targets, build, edit_package, own_text

pytestmark = pytest.mark.documents


@dataclass
class Scene:
    stack: ServiceStack
    server: LoggingServer
    targets: Targets
    markers: dict[str, str]


@pytest.fixture(scope="module")
def scene(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    missing_tools_or_fail()
    tmp = tmp_path_factory.mktemp("hostile-docx")
    tag = uuid.uuid4().hex[:10].upper()
    markers = {
        kind: f"{kind}MARK{tag}"
        for kind in ("SERVER", "SVGFILE", "DOCXFILE", "TEXTFILE", "HTMLFILE", "OPENPDF")
    }
    secrets = tmp / "secrets"
    secrets.mkdir()
    secret_svg = secrets / "secret.svg"
    secret_svg.write_text(
        f'<svg xmlns="http://www.w3.org/2000/svg" width="400" height="60"><text x="0" y="30">{markers["SVGFILE"]}</text></svg>'
    )
    secret_text = secrets / "secret.txt"
    secret_text.write_text(markers["TEXTFILE"] + "\n")
    secret_html = secrets / "secret.html"
    secret_html.write_text(f"<html><body><p>{markers['HTMLFILE']}</p></body></html>")
    secret_docx = make_docx(secrets / "secret.docx", [markers["DOCXFILE"]])
    # Another customer's PDF being converted at this moment, as far as /proc can tell.
    open_pdf = make_pdf(secrets / "customer.pdf", [markers["OPENPDF"]]).open("rb")
    try:
        with LoggingServer(markers["SERVER"]) as server:
            targets = Targets(
                base_url=server.base_url,
                secret_svg=secret_svg,
                secret_docx=secret_docx,
                secret_text=secret_text,
                secret_html=secret_html,
                open_pdf_fd_path=f"/proc/{os.getpid()}/fd/{open_pdf.fileno()}",
            )
            (tmp / "stack").mkdir()
            with service_stack(pg_server_url, tmp / "stack", WCU_TASK_MAX_ATTEMPTS="1") as stack:
                yield Scene(stack, server, targets, markers)
                # A warm LibreOffice once fetched again after its conversion had ended: give it time.
                time.sleep(2)
                assert server.connections == [], server.requests
    finally:
        open_pdf.close()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _parsed_text(stack: ServiceStack, document_id: str) -> str:
    body = stack.get(f"/v1/documents/{document_id}/text").json()
    return "\n".join(page["text"] for page in body["pages"])


@pytest.mark.parametrize("construct", CONSTRUCTS)
def test_a_hostile_docx_reaches_nothing_outside_itself(scene: Scene, construct: str, tmp_path: Path) -> None:
    document = build(construct, tmp_path / f"{construct}.docx", scene.targets)
    response = scene.stack.upload(document)
    assert response.status_code == 202, response.text
    parsed = scene.stack.wait_document(response.json()["document_id"], timeout=180)
    assert parsed["status"] == "parsed", parsed
    text = _parsed_text(scene.stack, parsed["id"])
    leaked = [kind for kind, marker in scene.markers.items() if marker in text]
    assert leaked == [], f"{construct}: foreign text in the result: {leaked}\n{text}"
    assert scene.server.requests_for(construct) == []
    assert own_text(construct) in _flat(text), text
    if construct == "altchunk-docx":  # a Word document inside the document keeps its text
        assert f"Chunk text of the {construct} document." in _flat(text), text


# -- structure that costs a slot its time limit (item 7) ------------------------------------------------------


def _nested_tables(base: Path, path: Path, depth: int) -> Path:
    inner = "<w:p><w:r><w:t>the bottom</w:t></w:r></w:p>"
    for _ in range(depth):
        inner = (
            "<w:tbl><w:tblPr/><w:tblGrid><w:gridCol w:w='2000'/></w:tblGrid>"
            f"<w:tr><w:tc>{inner}<w:p/></w:tc></w:tr></w:tbl>"
        )
    return edit_package(base, path, body=inner)


def _huge_content_types(path: Path) -> Path:
    overrides = "".join(
        f'<Override PartName="/x/{n}.xml" ContentType="application/xml"/>' for n in range(100_000)
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", CONTENT_TYPES.replace("</Types>", overrides + "</Types>"))
        archive.writestr("_rels/.rels", PACKAGE_RELS)
        archive.writestr("word/document.xml", "<w:document/>")
    return path


def _billion_laughs_svg(base: Path, path: Path) -> Path:
    entities = '<!ENTITY lol "lol">' + "".join(
        f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">' for n in range(1, 10)
    )
    svg = (
        f'<?xml version="1.0"?><!DOCTYPE svg [{entities}]>'
        '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>&lol9;</text></svg>'
    )
    picture = (
        '<w:p><w:r><w:drawing><wp:inline><wp:extent cx="95250" cy="95250"/><wp:docPr id="1" name="p"/>'
        '<a:graphic xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
        '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:pic xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture"><pic:nvPicPr>'
        '<pic:cNvPr id="1" name="p"/><pic:cNvPicPr/></pic:nvPicPr><pic:blipFill><a:blip r:embed="rIdLaugh"/>'
        "</pic:blipFill><pic:spPr/></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r></w:p>"
    )
    rel = (
        '<Relationship Id="rIdLaugh" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/image"'
        ' Target="media/laughs.svg"/>'
    )
    return edit_package(
        base,
        path,
        body=picture,
        rels=(rel,),
        parts={"word/media/laughs.svg": svg},
        content_types='<Default Extension="svg" ContentType="image/svg+xml"/>',
    )


def test_structural_bombs_fail_at_once_with_the_limit_named(scene: Scene, tmp_path: Path) -> None:
    base = make_docx(tmp_path / "base.docx", [own_text("structural")])
    refused = {
        "nested": (_nested_tables(base, tmp_path / "nested.docx", 5_000), "WCU_DOCX_MAX_XML_DEPTH"),
        "content-types": (_huge_content_types(tmp_path / "types.docx"), "[Content_Types].xml is"),
    }
    started = {}
    for name, (path, _) in refused.items():
        response = scene.stack.upload(path)
        assert response.status_code == 202, (name, response.text)
        started[name] = response.json()["document_id"]
    for name, (_, reason) in refused.items():
        document = scene.stack.wait_document(started[name], timeout=120)
        assert document["status"] == "failed" and reason in document["failure_reason"], (name, document)
    # The SVG's billion laughs never reach LibreOffice: the picture is replaced, the text stays.
    laughs = scene.stack.upload(_billion_laughs_svg(base, tmp_path / "laughs.docx")).json()
    document = scene.stack.wait_document(laughs["document_id"], timeout=120)
    assert document["status"] == "parsed", document
    assert own_text("structural") in _flat(_parsed_text(scene.stack, document["id"]))


# -- a main part that is not word/document.xml (item 12) ----------------------------------------------------


def test_a_docx_whose_main_part_is_not_word_document_xml_parses(scene: Scene, tmp_path: Path) -> None:
    text = f"The main part lives elsewhere {uuid.uuid4().hex[:8]}."
    original = make_docx(tmp_path / "original.docx", [text])
    moved = tmp_path / "moved.docx"
    with zipfile.ZipFile(original) as src, zipfile.ZipFile(moved, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data, name = src.read(info), info.filename
            if name == "_rels/.rels":
                data = data.replace(b"word/document.xml", b"content/body.xml")
            elif name == "[Content_Types].xml":
                data = data.replace(b"/word/document.xml", b"/content/body.xml")
            elif name == "word/document.xml":
                name = "content/body.xml"
            elif name == "word/_rels/document.xml.rels":
                name = "content/_rels/body.xml.rels"
                data = data.replace(b'Target="', b'Target="../word/').replace(
                    b'Target="../word/http', b'Target="http'
                )
            out.writestr(name, data)
    response = scene.stack.upload(moved)
    assert response.status_code == 202, response.text
    document = scene.stack.wait_document(response.json()["document_id"], timeout=120)
    assert (document["status"], document["kind"]) == ("parsed", "docx"), document
    assert text in _flat(_parsed_text(scene.stack, document["id"]))
