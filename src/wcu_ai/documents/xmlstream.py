"""Streaming XML for hostile input: one bounded pass with expat, and a writer for the events.

A DOCX is XML parts in a zip, and nothing in it is trusted, so its parts are never built into a
tree: `scan_xml` feeds a part to expat piece by piece and hands each element to a handler with
its namespace resolved, keeping only the stack of open elements. Memory is the chunk being fed
plus the largest single token of the part, which the part size limit bounds.

Refused before anything is expanded: any document type declaration (the DTD is where entity
declarations, the billion-laughs construct and external entities live; no OOXML part has one),
and nesting deeper than `max_depth`. Prefixes are resolved by hand rather than by expat's
namespace mode so a rewritten part keeps its original qualified names: OOXML refers to
prefixes from attribute values (`mc:Ignorable="w14 wp14"`), which renaming would break.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol
from xml.parsers import expat

XML_NS = "http://www.w3.org/XML/1998/namespace"
_FEED_BYTES = 64 * 1024


class XmlRefusedError(Exception):
    """The part cannot be read safely; `reason` completes "the part …" in words a user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class XmlDoctypeError(XmlRefusedError):
    """The part declares a document type (DTD), where entities are defined."""


class XmlDepthError(XmlRefusedError):
    """The part nests elements deeper than allowed."""

    def __init__(self, reason: str, depth: int) -> None:
        super().__init__(reason)
        self.depth = depth


class XmlSyntaxError(XmlRefusedError):
    """The part is not well-formed XML."""


@dataclass(frozen=True, slots=True)
class Attr:
    uri: str
    local: str
    qname: str
    value: str


class XmlHandler(Protocol):
    """What scan_xml calls; `uri`/`local` are the resolved name, `qname` the name as written."""

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None: ...

    def end(self, uri: str, local: str, qname: str) -> None: ...

    def text(self, data: str) -> None: ...

    def instruction(self, target: str, data: str) -> None: ...


def scan_xml(chunks: Iterable[bytes], handler: XmlHandler, *, max_depth: int) -> None:
    """Parse the XML in `chunks` and report its events to `handler`.

    Raises XmlDoctypeError, XmlDepthError or XmlSyntaxError; an exception raised by the handler
    stops the parse and propagates unchanged.
    """
    parser = expat.ParserCreate()
    parser.buffer_text = True
    parser.buffer_size = _FEED_BYTES
    parser.ordered_attributes = True
    # Never read an external DTD subset or parameter entity, whatever the document says.
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    unbound = "urn:wcu-ai:unbound-prefix:"
    root_scope: dict[str, str] = {"xml": XML_NS, "": ""}
    scopes: list[dict[str, str]] = [root_scope]
    names: list[tuple[str, str, str]] = []

    def refuse_doctype(*_args: object) -> None:
        raise XmlDoctypeError("declares a document type (DTD), which no OOXML part uses")

    def resolve(qname: str, scope: dict[str, str], *, is_attribute: bool) -> tuple[str, str]:
        prefix, sep, local = qname.rpartition(":")
        if not sep:
            return ("" if is_attribute else scope.get("", "")), qname
        return scope.get(prefix, unbound + prefix), local

    def start(qname: str, flat: list[str]) -> None:
        if len(names) >= max_depth:
            raise XmlDepthError(f"nests its elements deeper than {max_depth} levels", len(names) + 1)
        scope = scopes[-1]
        declared = None
        for i in range(0, len(flat), 2):
            name = flat[i]
            if name == "xmlns" or name.startswith("xmlns:"):
                if declared is None:
                    declared = dict(scope)
                declared[name[6:]] = flat[i + 1]
        if declared is not None:
            scope = declared
        scopes.append(scope)
        attrs = []
        for i in range(0, len(flat), 2):
            name = flat[i]
            if name == "xmlns" or name.startswith("xmlns:"):
                attrs.append(Attr("http://www.w3.org/2000/xmlns/", name, name, flat[i + 1]))
                continue
            uri, local = resolve(name, scope, is_attribute=True)
            attrs.append(Attr(uri, local, name, flat[i + 1]))
        uri, local = resolve(qname, scope, is_attribute=False)
        names.append((uri, local, qname))
        handler.start(uri, local, qname, attrs)

    def end(_qname: str) -> None:
        uri, local, qname = names.pop()
        scopes.pop()
        handler.end(uri, local, qname)

    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = handler.text
    parser.ProcessingInstructionHandler = handler.instruction
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except expat.ExpatError as exc:
        raise XmlSyntaxError(
            f"is not well-formed XML ({expat.ErrorString(exc.code)}, line {exc.lineno})"
        ) from None


_TEXT_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\r": "&#13;"})
_ATTR_ESCAPES = str.maketrans(
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
)


class XmlWriter:
    """Serialises events back to UTF-8 XML, written to `sink` in blocks.

    Text and attribute values are escaped so that parsing the output gives back exactly the
    values the events carried (tabs and line breaks in attributes included); an element
    with no content is written self-closed.
    """

    def __init__(self, sink: Callable[[bytes], object]) -> None:
        self._sink = sink
        self._parts: list[str] = ['<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\r\n']
        self._size = 0
        self._open_tag = False

    def start(self, qname: str, attrs: Iterable[tuple[str, str]]) -> None:
        if self._open_tag:
            self._parts.append(">")
        rendered = "".join(f' {name}="{value.translate(_ATTR_ESCAPES)}"' for name, value in attrs)
        self._parts.append(f"<{qname}{rendered}")
        self._open_tag = True
        self._size += len(qname) + len(rendered)

    def end(self, qname: str) -> None:
        if self._open_tag:
            self._parts.append("/>")
            self._open_tag = False
        else:
            self._parts.append(f"</{qname}>")
        self._size += len(qname)
        self._maybe_flush()

    def text(self, data: str) -> None:
        if not data:
            return
        if self._open_tag:
            self._parts.append(">")
            self._open_tag = False
        self._parts.append(data.translate(_TEXT_ESCAPES))
        self._size += len(data)
        self._maybe_flush()

    def close(self) -> None:
        if self._open_tag:
            raise ValueError("an element is still open")
        self._flush()

    def _maybe_flush(self) -> None:
        if self._size >= _FEED_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._parts:
            self._sink("".join(self._parts).encode("utf-8"))
            self._parts.clear()
        self._size = 0
