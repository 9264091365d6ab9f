"""scan_xml on hostile XML (DTDs, entities, depth, broken input) and XmlWriter's exact round trip."""

from __future__ import annotations

import io
import time

import pytest

from wcu_ai.documents.xmlstream import (
    Attr,
    XmlDepthError,
    XmlDoctypeError,
    XmlSyntaxError,
    XmlWriter,
    scan_xml,
)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        self.events.append(("start", uri, local, qname, tuple((a.uri, a.local, a.value) for a in attrs)))

    def end(self, uri: str, local: str, qname: str) -> None:
        self.events.append(("end", uri, local))

    def text(self, data: str) -> None:
        if self.events and self.events[-1][0] == "text":
            self.events[-1] = ("text", self.events[-1][1] + data)  # type: ignore[operator]
        else:
            self.events.append(("text", data))

    def instruction(self, target: str, data: str) -> None:
        self.events.append(("pi", target))


def _scan(xml: bytes, max_depth: int = 64) -> Recorder:
    recorder = Recorder()
    scan_xml([xml], recorder, max_depth=max_depth)
    return recorder


def test_billion_laughs_is_refused_before_any_expansion() -> None:
    entities = '<!ENTITY a "aaaaaaaaaa">' + "".join(
        f'<!ENTITY {chr(98 + n)} "{("&" + chr(97 + n) + ";") * 10}">' for n in range(9)
    )
    bomb = f'<?xml version="1.0"?><!DOCTYPE r [{entities}]><r>&j;</r>'.encode()
    started = time.monotonic()
    with pytest.raises(XmlDoctypeError, match="document type"):
        _scan(bomb)
    assert time.monotonic() - started < 5  # 10**10 characters were never built


def test_an_external_entity_is_refused_unread() -> None:
    with pytest.raises(XmlDoctypeError):
        _scan(b'<!DOCTYPE r SYSTEM "file:///etc/passwd"><r>x</r>')
    with pytest.raises(XmlDoctypeError):
        _scan(b'<!DOCTYPE r [<!ENTITY x SYSTEM "http://127.0.0.1:1/">]><r>&x;</r>')


def test_an_undefined_entity_is_a_syntax_error() -> None:
    with pytest.raises(XmlSyntaxError, match="not well-formed"):
        _scan(b"<r>&nope;</r>")


def test_depth_is_counted_and_limited() -> None:
    def nested(depth: int) -> bytes:
        return b"<a>" * depth + b"</a>" * depth

    assert len(_scan(nested(64), max_depth=64).events) == 128
    with pytest.raises(XmlDepthError, match="deeper than 64") as raised:
        _scan(nested(100_000), max_depth=64)
    assert raised.value.depth == 65


def test_broken_xml_is_a_syntax_error_with_its_line() -> None:
    with pytest.raises(XmlSyntaxError, match="line 2"):
        _scan(b"<r>\n<a></b></r>")


def test_namespaces_are_resolved_whatever_the_prefix() -> None:
    xml = (
        b'<x:document xmlns:x="urn:w"><x:body><p xmlns="urn:d" x:val="1" plain="2">'
        b'<y:r xmlns:y="urn:w"/></p></x:body></x:document>'
    )
    starts = [e for e in _scan(xml).events if e[0] == "start"]
    assert [(e[1], e[2]) for e in starts] == [
        ("urn:w", "document"),
        ("urn:w", "body"),
        ("urn:d", "p"),
        ("urn:w", "r"),
    ]
    p_attrs = starts[2][4]
    assert ("urn:w", "val", "1") in p_attrs and ("", "plain", "2") in p_attrs  # type: ignore[operator]


def test_an_unbound_prefix_matches_no_namespace() -> None:
    (start,) = [e for e in _scan(b"<w:document/>").events if e[0] == "start"]
    assert start[1] != "" and start[1] != "http://schemas.openxmlformats.org/wordprocessingml/2006/main"


def test_fed_in_pieces_the_events_are_the_same() -> None:
    xml = '<r a="1"><t xml:space="preserve">  text &amp; more é </t><u/></r>'.encode()
    whole = _scan(xml).events
    pieces = Recorder()
    scan_xml([xml[i : i + 3] for i in range(0, len(xml), 3)], pieces, max_depth=8)
    assert pieces.events == whole


class Copier(Recorder):
    """Writes back what it reads."""

    def __init__(self, writer: XmlWriter) -> None:
        super().__init__()
        self.writer = writer

    def start(self, uri: str, local: str, qname: str, attrs: list[Attr]) -> None:
        self.writer.start(qname, [(a.qname, a.value) for a in attrs])

    def end(self, uri: str, local: str, qname: str) -> None:
        self.writer.end(qname)

    def text(self, data: str) -> None:
        self.writer.text(data)


def test_the_writer_gives_back_exactly_what_was_read() -> None:
    xml = (
        '<w:document xmlns:w="urn:w" xmlns:mc="urn:mc" mc:Ignorable="w14 wp14">'
        '<w:t xml:space="preserve"> a &lt;b&gt; &amp; "c" \t\r\nd é</w:t>'
        '<w:p w:val="tab&#9;newline&#10;cr&#13;quote&quot;lt&lt;amp&amp;"/><w:e></w:e></w:document>'
    ).encode()
    out = io.BytesIO()
    writer = XmlWriter(out.write)
    scan_xml([xml], Copier(writer), max_depth=8)
    writer.close()
    written = out.getvalue()
    assert written.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    assert _scan(written).events == _scan(xml).events
    assert b"<w:e/>" in written and b'mc:Ignorable="w14 wp14"' in written
