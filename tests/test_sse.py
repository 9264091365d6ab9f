"""The tests' server-sent events parser (tests/sse.py) follows the WHATWG rules it claims."""

from __future__ import annotations

from tests.sse import Comment, Event, SSEParser, parse


def test_events_comments_and_every_line_ending() -> None:
    stream = [b"\xef\xbb\xbf: keep-alive\r\n\r\nevent: content\r", b'\ndata: {"a": 1}\r\rdata', b":x\n\n"]
    assert list(parse(stream)) == [
        Comment("keep-alive"),
        Event("content", '{"a": 1}', ""),
        Event("message", "x", ""),
    ]


def test_data_lines_join_fields_without_colon_and_unknown_fields() -> None:
    text = "data: one\ndata:two\ndata\nfoo: ignored\nid: 7\nretry: 3000\n\nevent: only-type\n\ndata: tail"
    parser = SSEParser()
    assert parser.feed(text.encode()) == [Event("message", "one\ntwo\n", "7")]
    assert parser.retry_ms == 3000
    # No data, no event; an event the stream did not end with a blank line is dropped.


def test_multibyte_characters_split_across_chunks() -> None:
    encoded = "data: é☃\n\n".encode()
    assert list(parse([encoded[:7], encoded[7:]])) == [Event("message", "é☃", "")]
