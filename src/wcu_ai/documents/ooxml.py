"""Office Open XML packages (DOCX): what a package says it is, and a copy of it that points nowhere.

What a package is comes from its own structure, as Word reads it: `_rels/.rels` names the main
part (the officeDocument relationship; Word allows any name, not only word/document.xml) and
`[Content_Types].xml` gives that part's content type. DOCX, DOCM and both template types are
Word documents; anything else (a spreadsheet, a presentation, a zip) is not.

`rewrite_package` writes the copy LibreOffice converts, so that nothing in it can make
LibreOffice load anything but the parts inside it:

- Relationships: every external one is dropped, in every `.rels` part (images, hyperlinks,
  headers, styles, fonts, templates, OLE links, frames, sub-documents, mail-merge sources), and
  so is every internal one whose target is not a part of the package, and every one that embeds
  a document LibreOffice would open by itself (OLE and ActiveX objects, sub-documents, macros).
  An altChunk that is itself a Word document stays, rewritten by the same rules; any other
  altChunk goes. References to a dropped relationship are removed with it.
- Fields: a field keeps its code only when the code's keyword is one that computes from the
  document itself (PAGE, TOC, REF, DATE, …) and the code is written plainly; every other field
  (INCLUDEPICTURE, INCLUDETEXT, LINK, DDE, DDEAUTO, IMPORT, DATABASE, any unknown or obfuscated
  one, HYPERLINK to anything but a web or mail address or a bookmark) has its code replaced by
  an unknown keyword, which LibreOffice imports as a plain mark around the field's last result:
  the text the author saw stays. A part whose fields cannot be followed (unbalanced across
  alternate content, notes or text boxes) has every field reduced to its result.
- Elements that load by themselves (subDoc, frameset, mailMerge, attachedTemplate, objectLink,
  linked OLE objects) are removed, and URL attributes (VML `src`, `o:href`, `href`,
  `althref`) are dropped.
- Pictures are judged by content, as LibreOffice detects them, not by name: an SVG (plain or
  gzipped, whatever its name) that references anything outside itself, declares a DTD or nests
  too deep is replaced by an empty SVG (Word keeps a PNG fallback next to its SVGs); so is
  PostScript, which LibreOffice may hand to Ghostscript.
- The main part's content type is set to DOCX's: macros and templates are never run or
  attached, only read.

Parts that need none of this are copied byte for byte, so a clean document converts exactly as
before. Every XML part is read by xmlstream.scan_xml: a DTD or nesting past the depth limit
refuses the document before LibreOffice sees it, as do parts past the size limit.
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO
from urllib.parse import unquote

from wcu_ai.documents.xmlstream import (
    Attr,
    XmlDepthError,
    XmlDoctypeError,
    XmlHandler,
    XmlRefusedError,
    XmlWriter,
    scan_xml,
)
from wcu_ai.errors import DocumentError, DocumentLimitError, DocumentTimeoutError

# -- names ----------------------------------------------------------------------------------------

_REL_NS = frozenset(
    {
        "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
        "http://purl.oclc.org/ooxml/officeDocument/relationships",
    }
)
_W_NS = frozenset(
    {
        "http://schemas.openxmlformats.org/wordprocessingml/2006/main",
        "http://purl.oclc.org/ooxml/wordprocessingml/main",
    }
)
_MC_NS = "http://schemas.openxmlformats.org/markup-compatibility/2006"
_O_NS = "urn:schemas-microsoft-com:office:office"
_PKG_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CONTENT_TYPES_NS = "http://schemas.openxmlformats.org/package/2006/content-types"

CONTENT_TYPES_PART = "[Content_Types].xml"
PACKAGE_RELS_PART = "_rels/.rels"
DOCX_MAIN_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"
#: Main-part content types of a Word document (DOCX, DOCM, DOTX, DOTM), lower-cased as they are
#: compared: MIME types ignore case.
WORD_MAIN_TYPES = frozenset(
    {
        DOCX_MAIN_TYPE,
        "application/vnd.ms-word.document.macroenabled.main+xml",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
        "application/vnd.ms-word.template.macroenabledtemplate.main+xml",
    }
)
_OFFICE_DOCUMENT = "officeDocument"
# Relationship types (their last path segment) dropped even when they point inside the package:
# each makes LibreOffice open another document, run code, or fetch a template or data source.
_DROPPED_TYPES = frozenset(
    {
        "oleObject",
        "package",
        "control",
        "activeXControlBinary",
        "subDocument",
        "attachedTemplate",
        "frame",
        "mailMergeSource",
        "mailMergeHeaderSource",
        "recipientData",
        "transform",
        "vbaProject",
        "vbaProjectSignature",
        "vbaData",
        "wordVbaData",
        "keyMapCustomizations",
        "attachedToolbars",
    }
)
_ALT_CHUNK = "aFChunk"
_FONT = "font"

#: `.rels` and `[Content_Types].xml` of a real document stay far below this (10,000 relationships
#: take about 1.5 MB).
MAX_STRUCTURE_PART_BYTES = 4 * 1024 * 1024
#: A member may expand this many times its compressed size before it counts as a bomb; real DOCX
#: XML stays well under 100x. Small members are exempt: a 20 kB run of spaces is harmless.
MAX_COMPRESSION_RATIO = 200
_RATIO_EXEMPT_BYTES = 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
# [Content_Types].xml and .rels are two levels deep.
_STRUCTURE_DEPTH = 8
#: An altChunk inside an altChunk inside the document is as deep as packages are followed.
MAX_NESTED_PACKAGES = 2
_READ_CHUNK = 64 * 1024
_SNIFF_BYTES = 64 * 1024
_MAX_INSTRUCTION_CHARS = 16 * 1024
# What zipfile raises on a damaged archive (detect.py reads packages with the same list).
BROKEN_ZIP = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,
    NotImplementedError,
)

_EMPTY_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
_NEUTRAL_INSTRUCTION = " WCUAIREMOVEDFIELD "

# Field keywords that compute only from the document, its properties and the layout.
_SAFE_FIELDS = frozenset(
    (
        "PAGE",
        "NUMPAGES",
        "SECTION",
        "SECTIONPAGES",
        "DATE",
        "TIME",
        "CREATEDATE",
        "SAVEDATE",
        "PRINTDATE",
        "EDITTIME",
        "AUTHOR",
        "TITLE",
        "SUBJECT",
        "KEYWORDS",
        "COMMENTS",
        "LASTSAVEDBY",
        "NUMWORDS",
        "NUMCHARS",
        "REVNUM",
        "DOCPROPERTY",
        "DOCVARIABLE",
        "INFO",
        "USERNAME",
        "USERINITIALS",
        "USERADDRESS",
        "TOC",
        "TOA",
        "TA",
        "TC",
        "XE",
        "INDEX",
        "REF",
        "PAGEREF",
        "NOTEREF",
        "STYLEREF",
        "SEQ",
        "SET",
        "ASK",
        "FILLIN",
        "IF",
        "COMPARE",
        "=",
        "QUOTE",
        "SYMBOL",
        "EQ",
        "ADVANCE",
        "LISTNUM",
        "AUTONUM",
        "AUTONUMLGL",
        "AUTONUMOUT",
        "FORMTEXT",
        "FORMCHECKBOX",
        "FORMDROPDOWN",
        "MERGEFIELD",
        "MERGEREC",
        "MERGESEQ",
        "NEXT",
        "NEXTIF",
        "SKIPIF",
        "GREETINGLINE",
        "ADDRESSBLOCK",
        "BIBLIOGRAPHY",
        "CITATION",
        "HYPERLINK",
        "SHAPE",
        "ADDIN",
        "BIDIOUTLINE",
        "BARCODE",
        "DISPLAYBARCODE",
        "PRIVATE",
        "GOTOBUTTON",
    )
)
_WEB_TARGET = re.compile(r"^(https?://|mailto:)", re.IGNORECASE)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
# What may appear between a field's begin and its separator for its code to count as plain.
_COMMAND_ELEMENTS = frozenset(
    {"r", "rPr", "pPr", "instrText", "fldChar", "ffData", "fldData", "p", "proofErr", "bookmarkStart"}
    | {"bookmarkEnd", "lastRenderedPageBreak", "permStart", "permEnd"}
)
# Property subtrees whose content never counts as field code.
_PROPERTY_ELEMENTS = frozenset({"rPr", "pPr", "ffData", "fldData"})
# Elements inside which fields must begin and end (LibreOffice reads each as its own stream or
# picks one branch).
_FIELD_SCOPES_W = frozenset({"footnote", "endnote", "comment", "txbxContent", "docPartBody", "hdr", "ftr"})
_ALWAYS_REMOVED_W = frozenset({"subDoc", "frameset", "mailMerge", "attachedTemplate", "objectLink"})
_REFERENCE_ELEMENTS_W = frozenset({"headerReference", "footerReference", "altChunk"})
_URL_ATTRIBUTES = frozenset({"href", "src", "althref"})
_TEXT_ELEMENTS = frozenset({"instrText", "delInstrText", "t", "delText"})

# Magic numbers of the raster and metafile formats LibreOffice reads, which carry no references.
_BINARY_MAGIC = (
    b"\x89PNG",
    b"\xff\xd8\xff",
    b"GIF8",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"\x01\x00\x00\x00",  # EMF
    b"\xd7\xcd\xc6\x9a",  # placeable WMF
    b"\x01\x00\x09\x00",
    b"\x02\x00\x09\x00",
    b"II\xbc",  # JPEG XR (wdp)
    b"RIFF",
    b"%PDF",
    b"\xd0\xcf\x11\xe0",  # OLE compound file
    b"PK\x03\x04",
)
_POSTSCRIPT_MAGIC = (b"%!", b"\xc5\xd0\xd3\xc6")
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class PackageLimits:
    """The DOCX limits (WCU_DOCX_* settings) a package is held to."""

    max_uncompressed_bytes: int
    max_part_bytes: int
    max_xml_depth: int


@dataclass(frozen=True, slots=True)
class MainPart:
    name: str
    content_type: str


@dataclass(slots=True)
class RewriteReport:
    """What rewrite_package changed; all zero for a document that needed nothing."""

    relationships_dropped: int = 0
    fields_neutralised: int = 0
    elements_removed: int = 0
    attributes_removed: int = 0
    images_replaced: int = 0
    parts_dropped: int = 0
    nested_packages: int = 0
    main_type_changed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def changed(self) -> bool:
        return any(self.as_dict().values())

    def add(self, other: RewriteReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True, slots=True)
class _Relationship:
    id: str
    type: str
    target: str
    external: bool

    @property
    def kind(self) -> str:
        return self.type.rstrip("/").rpartition("/")[2]


@dataclass(slots=True)
class _RelsPlan:
    """The decisions about one `.rels` part."""

    kept: list[_Relationship] = field(default_factory=list)
    dropped_ids: set[str] = field(default_factory=set)
    kept_chunk_ids: set[str] = field(default_factory=set)


# -- structure ------------------------------------------------------------------------------------


class _Members:
    """The zip's members by name, with OPC's case-insensitive and percent-decoded lookups."""

    def __init__(self, infos: list[zipfile.ZipInfo]) -> None:
        self.by_name = {info.filename: info for info in infos}
        self._folded = {name.lower(): name for name in self.by_name}

    def find(self, part: str) -> str | None:
        for candidate in (part, unquote(part)):
            if candidate in self.by_name:
                return candidate
            folded = self._folded.get(candidate.lower())
            if folded is not None:
                return folded
        return None


def _resolve_target(source: str, target: str) -> str | None:
    """The package path an internal target names, or None when it can name nothing inside."""
    target = target.strip()
    if not target or _SCHEME.match(target) or target.startswith("//") or "\\" in target:
        return None
    if "#" in target or "?" in target or "\x00" in target:
        return None
    decoded = unquote(target)
    if _SCHEME.match(decoded) or "\\" in decoded:
        return None
    base = "/" if decoded.startswith("/") else "/" + posixpath.dirname(source)
    # normpath keeps an absolute path at the root ("/word/../../x" is "/x"): inside the package.
    return posixpath.normpath(posixpath.join(base, decoded)).lstrip("/")


def _rels_source(rels_name: str) -> str:
    """The part a `.rels` part describes: word/_rels/document.xml.rels -> word/document.xml."""
    folder, _, name = rels_name.rpartition("/")
    parent = folder.rpartition("/")[0] if folder.endswith("_rels") else folder
    source = name.removesuffix(".rels")
    return f"{parent}/{source}".lstrip("/") if parent else source


class _ContentTypes:
    def __init__(self) -> None:
        self.defaults: dict[str, str] = {}
        self.overrides: dict[str, tuple[str, str]] = {}  # folded part name -> (name, type)

    def of(self, part: str) -> str | None:
        override = self.overrides.get("/" + part.lower())
        if override is not None:
            return override[1]
        extension = part.rpartition(".")[2].lower() if "." in part.rpartition("/")[2] else ""
        return self.defaults.get(extension)


class _CollectingHandler:
    """Collects the attributes of elements with a given local name (rels, content types)."""

    def __init__(self, wanted: Iterable[str]) -> None:
        self.wanted = frozenset(wanted)
        self.items: list[tuple[str, dict[str, str]]] = []

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        if local in self.wanted:
            self.items.append((local, {a.local: a.value for a in attrs if not a.uri}))

    def end(self, uri: str, local: str, qname: str) -> None:
        pass

    def text(self, data: str) -> None:
        pass

    def instruction(self, target: str, data: str) -> None:
        pass


def _read_structure_part(archive: zipfile.ZipFile, name: str, wanted: Iterable[str]) -> _CollectingHandler:
    info = archive.getinfo(name)
    if info.file_size > MAX_STRUCTURE_PART_BYTES:
        raise DocumentLimitError(
            f"The DOCX's {name} is {info.file_size} bytes; a real document's is far below "
            f"{MAX_STRUCTURE_PART_BYTES} (the limit for package structure parts); it was not opened"
        )
    handler = _CollectingHandler(wanted)
    with archive.open(info) as member:
        _scan_part(name, _bounded(member, MAX_STRUCTURE_PART_BYTES, name), handler, _STRUCTURE_DEPTH)
    return handler


def _read_content_types(archive: zipfile.ZipFile, name: str) -> _ContentTypes:
    handler = _read_structure_part(archive, name, ("Default", "Override"))
    types = _ContentTypes()
    for local, attrs in handler.items:
        content_type = attrs.get("ContentType", "").strip().lower()
        if local == "Default" and "Extension" in attrs:
            types.defaults[attrs["Extension"].lower()] = content_type
        elif local == "Override" and "PartName" in attrs:
            types.overrides[attrs["PartName"].lower()] = (attrs["PartName"], content_type)
    return types


def _read_relationships(archive: zipfile.ZipFile, name: str) -> list[_Relationship]:
    handler = _read_structure_part(archive, name, ("Relationship",))
    relationships = []
    for _, attrs in handler.items:
        mode = attrs.get("TargetMode", "Internal")
        relationships.append(
            _Relationship(
                id=attrs.get("Id", ""),
                type=attrs.get("Type", ""),
                target=attrs.get("Target", ""),
                external=mode != "Internal",
            )
        )
    return relationships


def main_part(archive: zipfile.ZipFile) -> MainPart:
    """The package's main part, from `_rels/.rels` and `[Content_Types].xml`.

    Raises DocumentError when the zip is not a Word document, DocumentLimitError when its
    structure parts are too big or too deep to be read.
    """
    members = _Members([info for info in archive.infolist() if not info.is_dir()])
    rels_name = members.find(PACKAGE_RELS_PART)
    types_name = members.find(CONTENT_TYPES_PART)
    if rels_name is None or types_name is None:
        raise DocumentError(
            "The file is a zip but not a Word document (it has no _rels/.rels or [Content_Types].xml)"
        )
    relationships = _read_relationships(archive, rels_name)
    for rel in relationships:
        if rel.kind != _OFFICE_DOCUMENT or rel.external:
            continue
        resolved = _resolve_target("", rel.target)
        name = members.find(resolved) if resolved is not None else None
        if name is None:
            raise DocumentError(
                f"The DOCX's main part {rel.target!r} (named in _rels/.rels) is missing; "
                "save the document again and re-upload"
            )
        content_type = _read_content_types(archive, types_name).of(name) or ""
        if content_type not in WORD_MAIN_TYPES:
            raise DocumentError(
                f"The file is an Office package but not a Word document (its main part is "
                f"{content_type or 'of no declared type'}); upload a .docx file"
            )
        return MainPart(name, content_type)
    raise DocumentError("The file is a zip but not a Word document (_rels/.rels names no main part)")


def check_zip(
    archive: zipfile.ZipFile, *, max_uncompressed_bytes: int, max_part_bytes: int
) -> list[zipfile.ZipInfo]:
    """The zip's file members, after the checks that need only its directory.

    Refuses (DocumentLimitError) too many members, two members of one name, a member or a
    total past the limits as declared, and a member that expands like a bomb.
    """
    members = [info for info in archive.infolist() if not info.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise DocumentLimitError(
            f"The DOCX holds {len(members)} files; more than {MAX_ZIP_MEMBERS} is not a plausible document"
        )
    seen: set[str] = set()
    for info in members:
        if info.filename in seen:
            raise DocumentLimitError(
                f"The DOCX holds two files named {info.filename!r}; Word never writes that, "
                "and readers disagree on which one counts"
            )
        seen.add(info.filename)
    declared = sum(info.file_size for info in members)
    if declared > max_uncompressed_bytes:
        raise DocumentLimitError(_too_big(declared, max_uncompressed_bytes))
    for info in members:
        if info.file_size > max_part_bytes:
            raise DocumentLimitError(_part_too_big(info.filename, info.file_size, max_part_bytes))
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > _RATIO_EXEMPT_BYTES and ratio > MAX_COMPRESSION_RATIO:
            raise DocumentLimitError(
                f"The DOCX looks like a zip bomb: {info.filename} expands {ratio:.0f} times "
                f"(more than {MAX_COMPRESSION_RATIO}); it was not opened"
            )
    return members


def _too_big(size: int, limit: int) -> str:
    return (
        f"The DOCX expands to more than {limit} bytes uncompressed (at least {size}); "
        "the limit is WCU_DOCX_MAX_UNCOMPRESSED_BYTES"
    )


def _part_too_big(name: str, size: int, limit: int) -> str:
    return (
        f"The DOCX's part {name} is {size} bytes uncompressed; the limit per part is {limit} "
        "(WCU_DOCX_MAX_PART_BYTES)"
    )


def _bounded(
    member: IO[bytes],
    limit: int,
    name: str,
    deadline: float | None = None,
    stop: threading.Event | None = None,
) -> Iterator[bytes]:
    """A member's bytes in chunks; the part limit holds even if the zip's headers lie.

    The deadline and the stop event are looked at between chunks, so a rewrite ends within one
    chunk's work of either.
    """
    size = 0
    while block := member.read(_READ_CHUNK):
        size += len(block)
        if size > limit:
            raise DocumentLimitError(_part_too_big(name, size, limit))
        if deadline is not None and time.monotonic() > deadline:
            raise _Deadline
        if stop is not None and stop.is_set():
            raise RewriteStoppedError
        yield block


class _Deadline(Exception):
    pass


class RewriteStoppedError(Exception):
    """The rewrite was told to stop (its caller was cancelled); its output was removed."""


def _scan_part(name: str, chunks: Iterable[bytes], handler: XmlHandler, depth: int) -> None:
    try:
        scan_xml(chunks, handler, max_depth=depth)
    except XmlDepthError as exc:
        raise DocumentLimitError(
            f"The DOCX's part {name} nests its XML elements deeper than {depth} levels "
            "(WCU_DOCX_MAX_XML_DEPTH); simplify the document (deeply nested tables?) and re-upload"
        ) from exc
    except XmlDoctypeError as exc:
        raise DocumentLimitError(
            f"The DOCX's part {name} declares a document type (DTD, entities), which OOXML never "
            "uses; it was not opened"
        ) from exc
    except XmlRefusedError as exc:
        raise DocumentError(
            f"The DOCX is damaged: its part {name} {exc.reason}; save it again in Word and re-upload"
        ) from exc


# -- fields -----------------------------------------------------------------------------------------


def _instruction_tokens(instruction: str) -> list[tuple[str, bool]]:
    """Field-code tokens as (text, is_switch): quoted strings (without the quotes, never a
    switch), switches (a backslash and a letter), bare words."""
    tokens: list[tuple[str, bool]] = []
    i, n = 0, len(instruction)
    while i < n:
        char = instruction[i]
        if char.isspace():
            i += 1
        elif char == '"':
            close = instruction.find('"', i + 1)
            close = n if close < 0 else close
            tokens.append((instruction[i + 1 : close], False))
            i = close + 1
        elif char == "\\":
            tokens.append((instruction[i : i + 2], True))
            i += 2
        else:
            j = i
            while j < n and not instruction[j].isspace() and instruction[j] not in '"\\':
                j += 1
            tokens.append((instruction[i:j], False))
            i = j
    return tokens


def field_is_safe(instruction: str) -> bool:
    """Whether a field code only computes from the document (see the module docstring)."""
    tokens = _instruction_tokens(instruction)
    if not tokens:
        return True
    keyword = tokens[0][0].upper()
    if keyword.startswith("="):
        keyword = "="
    if keyword not in _SAFE_FIELDS:
        return False
    if keyword != "HYPERLINK":
        return True
    rest = iter(tokens[1:])
    for token, is_switch in rest:
        if is_switch and token in ("\\l", "\\o", "\\t"):
            next(rest, None)  # the bookmark, tooltip or frame name
        elif not is_switch and not _WEB_TARGET.match(token.strip()):
            return False
    return True


@dataclass(slots=True)
class _Field:
    index: int
    in_command: bool = True
    plain: bool = True
    instruction: list[str] = field(default_factory=list)
    instruction_chars: int = 0
    keyword_written: bool = False


@dataclass(slots=True)
class _Frame:
    uri: str
    local: str
    qname: str
    removed: bool = False
    scope: bool = False
    properties: bool = False
    text_element: bool = False


class _PartWalker:
    """The structure both passes over an XML part follow in the same way.

    Pass one (_PartInspector) decides; pass two (_PartRewriter) writes. Both walk the same
    events with the same rules, so the n-th field begun is the same field in both.
    """

    def __init__(self, dropped_ids: set[str], kept_chunk_ids: set[str]) -> None:
        self.dropped_ids = dropped_ids
        self.kept_chunk_ids = kept_chunk_ids
        self.frames: list[_Frame] = []
        self.scopes: list[list[_Field]] = [[]]
        self.fields_begun = 0
        self.removing = 0  # depth inside a removed element
        self.properties = 0  # depth inside a property subtree
        self.confused = False

    # -- rules shared by both passes

    def removes(self, uri: str, local: str, attrs: list[Attr]) -> bool:
        if uri in _W_NS:
            if local in _ALWAYS_REMOVED_W:
                return True
            if local in _REFERENCE_ELEMENTS_W:
                ref = next((a.value for a in attrs if a.uri in _REL_NS and a.local == "id"), None)
                if local == "altChunk":
                    return ref not in self.kept_chunk_ids
                return ref in self.dropped_ids
        if uri == _O_NS and local == "OLEObject":
            return any(not a.uri and a.local == "Type" and a.value.strip() == "Link" for a in attrs)
        return False

    def open_field(self) -> _Field | None:
        stack = self.scopes[-1]
        return stack[-1] if stack else None

    def _mark_not_plain(self) -> None:
        for open_field in self.scopes[-1]:
            if open_field.in_command:
                open_field.plain = False

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        if self.removing:
            self.removing += 1
            return
        frame = _Frame(uri, local, qname)
        self.frames.append(frame)
        if self.removes(uri, local, attrs):
            frame.removed = True
            self.removing = 1
            self.on_removed(frame)
            return
        is_w = uri in _W_NS
        top = self.open_field()
        in_command = top is not None and top.in_command and not self.properties
        if in_command and not (is_w and local in _COMMAND_ELEMENTS):
            self._mark_not_plain()
        if is_w and local in _PROPERTY_ELEMENTS:
            frame.properties = True
            self.properties += 1
        if is_w and local in _TEXT_ELEMENTS:
            frame.text_element = True
        if is_w and local == "fldChar":
            self._field_char(next((a.value for a in attrs if a.local == "fldCharType"), ""))
        if (uri == _MC_NS and local in ("Choice", "Fallback")) or (is_w and local in _FIELD_SCOPES_W):
            frame.scope = True
            self.scopes.append([])
        self.on_start(frame, attrs)

    def end(self, uri: str, local: str, qname: str) -> None:
        if self.removing > 1:
            self.removing -= 1
            return
        frame = self.frames.pop()
        if frame.removed:
            self.removing = 0
            return
        self.on_end(frame)
        if frame.properties:
            self.properties -= 1
        if frame.scope:
            left_open = self.scopes.pop()
            if left_open:
                self.confused = True
                for open_field in left_open:
                    self.on_field_closed(open_field)
        if not self.frames:  # the root: fields still open end with the part
            for open_field in self.scopes[0]:
                self.on_field_closed(open_field)
            self.scopes[0].clear()

    def text(self, data: str) -> None:
        if self.removing or not self.frames:
            return
        frame = self.frames[-1]
        top = self.open_field()
        if frame.text_element and top is not None and top.in_command:
            if frame.local == "instrText":
                top.instruction_chars += len(data)
                if top.instruction_chars > _MAX_INSTRUCTION_CHARS:
                    top.plain = False
                else:
                    top.instruction.append(data)
            elif data.strip():
                self._mark_not_plain()
        self.on_text(frame, data)

    def instruction(self, target: str, data: str) -> None:
        pass

    def _field_char(self, kind: str) -> None:
        stack = self.scopes[-1]
        if kind == "begin":
            if stack and stack[-1].in_command:
                self._mark_not_plain()  # a field inside another's code
            stack.append(_Field(self.fields_begun))
            self.fields_begun += 1
        elif kind == "separate":
            if not stack or not stack[-1].in_command:
                self.confused = True
            else:
                stack[-1].in_command = False
        elif kind == "end":
            if not stack:
                self.confused = True
            else:
                self.on_field_closed(stack.pop())
        else:
            self.confused = True

    # -- hooks

    def on_start(self, frame: _Frame, attrs: list[Attr]) -> None:
        pass

    def on_end(self, frame: _Frame) -> None:
        pass

    def on_text(self, frame: _Frame, data: str) -> None:
        pass

    def on_removed(self, frame: _Frame) -> None:
        pass

    def on_field_closed(self, closed: _Field) -> None:
        pass


def _url_attribute(attr: Attr) -> bool:
    return attr.local in _URL_ATTRIBUTES and attr.uri not in _REL_NS and not attr.qname.startswith("xmlns")


class _PartInspector(_PartWalker):
    """Pass one: which fields to neutralise, and whether the part needs rewriting at all."""

    def __init__(self, dropped_ids: set[str], kept_chunk_ids: set[str]) -> None:
        super().__init__(dropped_ids, kept_chunk_ids)
        self.unsafe_fields: set[int] = set()
        self.report = RewriteReport()
        self.svg: _SvgInspector | None = None

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        if self.svg is not None:
            self.svg.start(uri, local, qname, attrs)
            return
        if not self.frames and local == "svg":
            self.svg = _SvgInspector()
            self.svg.start(uri, local, qname, attrs)
            return
        super().start(uri, local, qname, attrs)

    def end(self, uri: str, local: str, qname: str) -> None:
        if self.svg is not None:
            self.svg.end(uri, local, qname)
            return
        super().end(uri, local, qname)

    def text(self, data: str) -> None:
        if self.svg is not None:
            self.svg.text(data)
            return
        super().text(data)

    def instruction(self, target: str, data: str) -> None:
        if self.svg is not None:
            self.svg.instruction(target, data)

    def on_removed(self, frame: _Frame) -> None:
        self.report.elements_removed += 1

    def on_start(self, frame: _Frame, attrs: list[Attr]) -> None:
        for attr in attrs:
            if _url_attribute(attr) or (attr.uri in _REL_NS and attr.value in self.dropped_ids):
                self.report.attributes_removed += 1
        if frame.uri in _W_NS and frame.local == "fldSimple":
            instruction = next((a.value for a in attrs if a.uri in _W_NS and a.local == "instr"), "")
            if not field_is_safe(instruction):
                self.report.fields_neutralised += 1

    def on_field_closed(self, closed: _Field) -> None:
        if not (closed.plain and field_is_safe("".join(closed.instruction))):
            self.unsafe_fields.add(closed.index)
            self.report.fields_neutralised += 1

    @property
    def needs_rewrite(self) -> bool:
        return self.confused or self.report.changed


class _PartRewriter(_PartWalker):
    """Pass two: the part again, with what pass one decided applied, written to `writer`."""

    def __init__(
        self,
        dropped_ids: set[str],
        kept_chunk_ids: set[str],
        *,
        unsafe_fields: set[int],
        unlink_all: bool,
        writer: XmlWriter,
    ) -> None:
        super().__init__(dropped_ids, kept_chunk_ids)
        self.unsafe_fields = unsafe_fields
        self.unlink_all = unlink_all
        self.writer = writer
        self.skipped = 0  # depth inside an element left out of the output (not a removal)

    def _in_unsafe_command(self) -> _Field | None:
        for open_field in reversed(self.scopes[-1]):
            if open_field.in_command and open_field.index in self.unsafe_fields:
                return open_field
        return None

    def _leaves_out(self, frame: _Frame) -> bool:
        if frame.uri not in _W_NS:
            return False
        if self.unlink_all:
            return frame.local in ("fldChar", "instrText", "delInstrText")
        return frame.local == "sym" and self._in_unsafe_command() is not None

    def on_start(self, frame: _Frame, attrs: list[Attr]) -> None:
        if self.skipped:
            self.skipped += 1
            return
        if self._leaves_out(frame):
            self.skipped = 1
            return
        kept = []
        for attr in attrs:
            if _url_attribute(attr) or (attr.uri in _REL_NS and attr.value in self.dropped_ids):
                continue
            value = attr.value
            instruction = frame.local == "fldSimple" and attr.local == "instr" and attr.uri in _W_NS
            if instruction and (self.unlink_all or not field_is_safe(value)):
                value = _NEUTRAL_INSTRUCTION
            kept.append((attr.qname, value))
        self.writer.start(frame.qname, kept)

    def on_end(self, frame: _Frame) -> None:
        if self.skipped:
            self.skipped -= 1
            return
        if frame.text_element and frame.local in ("instrText", "t"):
            unsafe = self._in_unsafe_command()
            if unsafe is not None and not unsafe.keyword_written:
                unsafe.keyword_written = True
                self.writer.text(_NEUTRAL_INSTRUCTION)
        self.writer.end(frame.qname)

    def on_text(self, frame: _Frame, data: str) -> None:
        if self.skipped:
            return
        if frame.text_element and self._in_unsafe_command() is not None:
            return
        self.writer.text(data)


# -- pictures -------------------------------------------------------------------------------------------

_CSS_URL = re.compile(r"url\(\s*['\"]?\s*(?!#)", re.IGNORECASE)
_MAX_STYLE_CHARS = 1024 * 1024
_RASTER_DATA = re.compile(r"^data:image/(png|jpe?g|gif|bmp);", re.IGNORECASE)


class _SvgInspector:
    """Whether an SVG references anything outside itself (images, fonts, style sheets, filters)."""

    def __init__(self) -> None:
        self.external = False
        self._style_depth = 0
        self._style_chars = 0

    def _judge_css(self, css: str) -> None:
        if "@import" in css.lower() or "\\" in css or _CSS_URL.search(css):
            self.external = True

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        if local == "style" or self._style_depth:
            self._style_depth += 1
        for attr in attrs:
            value = attr.value.strip()
            if attr.local in ("href", "src") and not (value.startswith("#") or _RASTER_DATA.match(value)):
                self.external = True
            elif "url(" in value.lower() or attr.local == "style":
                self._judge_css(value)

    def end(self, uri: str, local: str, qname: str) -> None:
        if self._style_depth:
            self._style_depth -= 1

    def text(self, data: str) -> None:
        if self._style_depth:
            self._style_chars += len(data)
            if self._style_chars > _MAX_STYLE_CHARS:
                self.external = True
            self._judge_css(data)

    def instruction(self, target: str, data: str) -> None:
        if target.lower() == "xml-stylesheet":
            self.external = True


def _looks_like_xml(head: bytes) -> bool:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return True
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if stripped.startswith(b"<"):
        return True
    return _mentions_markup(head)


def _mentions_markup(head: bytes) -> bool:
    # LibreOffice finds an SVG by "<svg" near the start, whatever precedes it: even after a
    # two-byte magic such as BMP's "BM", which a crafted SVG can start with.
    lowered = head.lower()
    return b"<svg" in lowered or b"<!doctype" in lowered or b"<?xml" in lowered


def _svg_is_safe(chunks: Iterable[bytes], depth: int) -> bool:
    inspector = _SvgInspector()
    try:
        scan_xml(chunks, inspector, max_depth=depth)
    except XmlRefusedError:
        return False
    return not inspector.external


# -- the rewrite ------------------------------------------------------------------------------------------


class _Rewrite:
    """One package being rewritten: its members, decisions, and the output zip."""

    def __init__(
        self,
        archive: zipfile.ZipFile,
        out: zipfile.ZipFile,
        *,
        limits: PackageLimits,
        deadline: float,
        scratch_dir: Path,
        nesting: int,
        stop: threading.Event | None,
    ) -> None:
        self.stop = stop
        self.archive = archive
        self.out = out
        self.limits = limits
        self.deadline = deadline
        self.scratch_dir = scratch_dir
        self.nesting = nesting
        self.report = RewriteReport()
        self.infos = check_zip(
            archive,
            max_uncompressed_bytes=limits.max_uncompressed_bytes,
            max_part_bytes=limits.max_part_bytes,
        )
        self.members = _Members(self.infos)
        self.declared = sum(info.file_size for info in self.infos)

    def chunks(self, info: zipfile.ZipInfo) -> Iterator[bytes]:
        # check_zip bounded the declared sizes, and zipfile never returns more than a member
        # declares (a member that lies fails its CRC): what is read here is within the limits.
        with self.archive.open(info) as member:
            yield from _bounded(member, self.limits.max_part_bytes, info.filename, self.deadline, self.stop)

    def head(self, info: zipfile.ZipInfo) -> bytes:
        with self.archive.open(info) as member:
            return member.read(_SNIFF_BYTES)

    def run(self) -> None:
        main = main_part(self.archive)
        types_part = self.members.find(CONTENT_TYPES_PART)
        assert types_part is not None  # main_part found it
        types = _read_content_types(self.archive, types_part)
        plans: dict[str, _RelsPlan] = {}
        dropped_targets: set[str] = set()
        kept_targets: set[str] = set()
        self.chunk_parts: set[str] = set()
        self.font_parts: set[str] = set()
        for info in self.infos:
            if not info.filename.lower().endswith(".rels"):
                continue
            source = _rels_source(info.filename)
            plan = _RelsPlan()
            for rel in _read_relationships(self.archive, info.filename):
                target = None if rel.external else _resolve_target(source, rel.target)
                name = self.members.find(target) if target is not None else None
                keep = name is not None and rel.kind not in _DROPPED_TYPES
                if keep and rel.kind == _ALT_CHUNK:
                    keep = self._is_nested_document(self.members.by_name[name])  # type: ignore[index]
                    if keep:
                        self.chunk_parts.add(name)  # type: ignore[arg-type]
                        plan.kept_chunk_ids.add(rel.id)
                if keep:
                    plan.kept.append(rel)
                    kept_targets.add(name)  # type: ignore[arg-type]
                    if rel.kind == _FONT:
                        self.font_parts.add(name)  # type: ignore[arg-type]
                else:
                    plan.dropped_ids.add(rel.id)
                    self.report.relationships_dropped += 1
                    if name is not None:
                        dropped_targets.add(name)
            plans[source.lower()] = plan
        dropped_parts = dropped_targets - kept_targets
        dropped_parts |= {
            info.filename
            for info in self.infos
            if info.filename.lower().endswith(".rels") and _rels_source(info.filename) in dropped_parts
        }
        self.report.parts_dropped += len(dropped_parts)
        for info in self.infos:
            name = info.filename
            if name in dropped_parts:
                continue
            if name == types_part:
                if main.content_type == DOCX_MAIN_TYPE and not dropped_parts:
                    self._copy(info)
                else:
                    self._write(info, _content_types_xml(types, main, dropped_parts, self.report))
            elif name.lower().endswith(".rels"):
                plan = plans[_rels_source(name).lower()]
                if plan.dropped_ids:
                    self._write(info, _relationships_xml(plan.kept))
                else:
                    self._copy(info)  # read and checked above: only what was kept is in it
            elif name in self.chunk_parts:
                self._nested(info)
            else:
                plan = plans.get(name.lower(), _RelsPlan())
                self._part(info, types.of(name), plan)

    def _is_nested_document(self, info: zipfile.ZipInfo) -> bool:
        if self.nesting >= MAX_NESTED_PACKAGES or not self.head(info).startswith(b"PK\x03\x04"):
            return False
        with tempfile.TemporaryFile(dir=self.scratch_dir) as spool:
            for block in self.chunks(info):
                spool.write(block)
            spool.seek(0)
            try:
                with zipfile.ZipFile(spool) as nested:
                    main_part(nested)
            except (DocumentError, *BROKEN_ZIP):
                return False
        return True

    def _write(self, info: zipfile.ZipInfo, data: bytes) -> None:
        self.out.writestr(_out_info(info), data)

    def _copy(self, info: zipfile.ZipInfo) -> None:
        with self.out.open(_out_info(info), "w") as sink:
            for block in self.chunks(info):
                sink.write(block)

    def _nested(self, info: zipfile.ZipInfo) -> None:
        with tempfile.TemporaryDirectory(dir=self.scratch_dir) as tmp:
            src, dst = Path(tmp, "in.docx"), Path(tmp, "out.docx")
            with src.open("wb") as spool:
                for block in self.chunks(info):
                    spool.write(block)
            left = PackageLimits(
                max_uncompressed_bytes=max(self.limits.max_uncompressed_bytes - self.declared, 1),
                max_part_bytes=self.limits.max_part_bytes,
                max_xml_depth=self.limits.max_xml_depth,
            )
            nested = _rewrite_file(
                src,
                dst,
                limits=left,
                deadline=self.deadline,
                scratch_dir=Path(tmp),
                nesting=self.nesting + 1,
                stop=self.stop,
            )
            self.report.add(nested)
            self.report.nested_packages += 1
            with dst.open("rb") as result, self.out.open(_out_info(info), "w") as sink:
                shutil.copyfileobj(result, sink, _READ_CHUNK)

    def _part(self, info: zipfile.ZipInfo, content_type: str | None, plan: _RelsPlan) -> None:
        name = info.filename
        is_ooxml = (
            content_type is not None and _is_xml_type(content_type) and content_type != "image/svg+xml"
        ) or (content_type is None and name.lower().endswith(".xml"))
        if is_ooxml:
            self._ooxml_part(info, plan)
            return
        if name in self.font_parts:
            self._copy(info)
            return
        head = self.head(info)
        if head.startswith(_POSTSCRIPT_MAGIC):
            self._replace_picture(info)
        elif head.startswith(_GZIP_MAGIC):
            if not self._gzip_is_safe(info):
                self._replace_picture(info)
            else:
                self._copy(info)
        elif (not head.startswith(_BINARY_MAGIC) and _looks_like_xml(head)) or _mentions_markup(head):
            if _svg_is_safe(self.chunks(info), self.limits.max_xml_depth):
                self._copy(info)
            else:
                self._replace_picture(info)
        else:
            self._copy(info)

    def _replace_picture(self, info: zipfile.ZipInfo) -> None:
        self.report.images_replaced += 1
        self._write(info, _EMPTY_SVG)

    def _gzip_is_safe(self, info: zipfile.ZipInfo) -> bool:
        """A gzipped part: LibreOffice unpacks SVGZ (and EMZ/WMZ) by content."""
        limit = self.limits.max_part_bytes
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        inner = bytearray()
        try:
            for block in self.chunks(info):
                inner += inflater.decompress(block, limit + 1 - len(inner))
                if len(inner) > limit or inflater.unconsumed_tail:
                    return False
        except zlib.error:
            return True  # not gzip after all: LibreOffice cannot unpack it either
        head = bytes(inner[:_SNIFF_BYTES])
        if head.startswith(_BINARY_MAGIC) or not _looks_like_xml(head):
            return True
        view = memoryview(inner)
        return _svg_is_safe(
            (bytes(view[i : i + _READ_CHUNK]) for i in range(0, len(view), _READ_CHUNK)),
            self.limits.max_xml_depth,
        )

    def _ooxml_part(self, info: zipfile.ZipInfo, plan: _RelsPlan) -> None:
        depth = self.limits.max_xml_depth
        inspector = _PartInspector(plan.dropped_ids, plan.kept_chunk_ids)
        _scan_part(info.filename, self.chunks(info), inspector, depth)
        if inspector.svg is not None:
            if inspector.svg.external:
                self._replace_picture(info)
            else:
                self._copy(info)
            return
        if not inspector.needs_rewrite:
            self._copy(info)
            return
        self.report.add(inspector.report)
        if inspector.confused:
            self.report.fields_neutralised += 1
        with self.out.open(_out_info(info), "w") as sink:
            writer = XmlWriter(sink.write)
            rewriter = _PartRewriter(
                plan.dropped_ids,
                plan.kept_chunk_ids,
                unsafe_fields=inspector.unsafe_fields,
                unlink_all=inspector.confused,
                writer=writer,
            )
            _scan_part(info.filename, self.chunks(info), rewriter, depth)
            writer.close()


def _is_xml_type(content_type: str) -> bool:
    return content_type.endswith(("+xml", "/xml"))


def _out_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    out.compress_type = (
        zipfile.ZIP_STORED if info.compress_type == zipfile.ZIP_STORED else zipfile.ZIP_DEFLATED
    )
    return out


def _content_types_xml(
    types: _ContentTypes, main: MainPart, dropped_parts: set[str], report: RewriteReport
) -> bytes:
    dropped = {"/" + name.lower() for name in dropped_parts}
    buffer = io.BytesIO()
    writer = XmlWriter(buffer.write)
    writer.start("Types", [("xmlns", _CONTENT_TYPES_NS)])
    for extension, content_type in types.defaults.items():
        writer.start("Default", [("Extension", extension), ("ContentType", content_type)])
        writer.end("Default")
    main_key = "/" + main.name.lower()
    if main.content_type != DOCX_MAIN_TYPE:
        report.main_type_changed += 1
    overrides = dict(types.overrides)
    overrides[main_key] = ("/" + main.name, DOCX_MAIN_TYPE)
    for key, (part_name, content_type) in overrides.items():
        if key in dropped:
            continue
        writer.start("Override", [("PartName", part_name), ("ContentType", content_type)])
        writer.end("Override")
    writer.end("Types")
    writer.close()
    return buffer.getvalue()


def _relationships_xml(kept: list[_Relationship]) -> bytes:
    buffer = io.BytesIO()
    writer = XmlWriter(buffer.write)
    writer.start("Relationships", [("xmlns", _PKG_RELS_NS)])
    for rel in kept:
        writer.start("Relationship", [("Id", rel.id), ("Type", rel.type), ("Target", rel.target)])
        writer.end("Relationship")
    writer.end("Relationships")
    writer.close()
    return buffer.getvalue()


def _rewrite_file(
    src: Path,
    dst: Path,
    *,
    limits: PackageLimits,
    deadline: float,
    scratch_dir: Path,
    nesting: int,
    stop: threading.Event | None,
) -> RewriteReport:
    try:
        with zipfile.ZipFile(src) as archive, zipfile.ZipFile(dst, "w", allowZip64=True) as out:
            rewrite = _Rewrite(
                archive,
                out,
                limits=limits,
                deadline=deadline,
                scratch_dir=scratch_dir,
                nesting=nesting,
                stop=stop,
            )
            rewrite.run()
            return rewrite.report
    except DocumentError:
        raise
    except BROKEN_ZIP as exc:
        raise DocumentError(
            f"The DOCX is damaged (its zip structure cannot be read: {exc}); save it again and re-upload"
        ) from exc


def rewrite_package(
    src: Path,
    dst: Path,
    *,
    limits: PackageLimits,
    deadline: float,
    timeout_seconds: float,
    scratch_dir: Path,
    stop: threading.Event | None = None,
) -> RewriteReport:
    """Write to `dst` the copy of the DOCX at `src` that LibreOffice may convert.

    Raises DocumentLimitError for a limit (the message names the setting), DocumentError for a
    package that is not a readable Word document, DocumentTimeoutError when `deadline`
    (time.monotonic()) passes, RewriteStoppedError soon after `stop` is set. `dst` is removed on
    any error.
    """
    try:
        return _rewrite_file(
            src, dst, limits=limits, deadline=deadline, scratch_dir=scratch_dir, nesting=0, stop=stop
        )
    except _Deadline:
        dst.unlink(missing_ok=True)
        raise DocumentTimeoutError(
            f"Parsing the document took longer than the time allowed ({timeout_seconds:.0f} s, "
            "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
        ) from None
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


def inflate_all(
    archive: zipfile.ZipFile,
    members: list[zipfile.ZipInfo],
    *,
    max_uncompressed_bytes: int,
    max_part_bytes: int,
    stop: threading.Event | None = None,
) -> int:
    """Inflate every member (which verifies its CRC) within the limits; the bytes it gave."""
    inflated = 0
    for info in members:
        with archive.open(info) as member:
            for block in _bounded(member, max_part_bytes, info.filename, stop=stop):
                inflated += len(block)
                if inflated > max_uncompressed_bytes:
                    raise DocumentLimitError(_too_big(inflated, max_uncompressed_bytes))
    return inflated
