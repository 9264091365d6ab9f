"""A server-sent events parser written to the WHATWG HTML standard, "9.2.6 Interpreting an event
stream", for the tests' clients. Unlike a browser it also reports comment lines, so a test can
see the server's heartbeats.

- The stream is UTF-8; a leading BOM is dropped; lines end with CRLF, LF or CR (a CR at the end
  of one chunk and an LF at the start of the next are one line end).
- A line starting with ":" is a comment. A line with ":" is field ":" value (one leading space
  of the value dropped); a line without ":" is a field with an empty value.
- event sets the type, data appends its value and a LF, id sets the last event id (unless the
  value holds a NUL), retry (ASCII digits only) the reconnection time; other fields are ignored.
- An empty line dispatches the event: none when the data buffer is empty; the data loses its
  last LF; the type is "message" unless set. An event not ended by an empty line when the
  stream ends is dropped.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Event:
    type: str
    data: str
    last_event_id: str


@dataclass(frozen=True)
class Comment:
    text: str


class SSEParser:
    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._started = False
        self._after_cr = False
        self._type = ""
        self._data: list[str] = []
        self._last_event_id = ""
        self.retry_ms: int | None = None

    def feed(self, chunk: bytes) -> list[Event | Comment]:
        text = self._decoder.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        out: list[Event | Comment] = []
        for char in text:
            if self._after_cr:
                self._after_cr = False
                if char == "\n":
                    continue  # the LF of a CRLF split across chunks, or not: one line end
            if char in "\r\n":
                self._after_cr = char == "\r"
                out.extend(self._line(self._buffer))
                self._buffer = ""
            else:
                self._buffer += char
        return out

    def _line(self, line: str) -> Iterator[Event | Comment]:
        if line == "":
            yield from self._dispatch()
            return
        if line.startswith(":"):
            yield Comment(line[1:].removeprefix(" "))
            return
        field, colon, value = line.partition(":")
        if colon:
            value = value.removeprefix(" ")
        if field == "event":
            self._type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\x00" not in value:
                self._last_event_id = value
        elif field == "retry" and value and all("0" <= c <= "9" for c in value):
            self.retry_ms = int(value)

    def _dispatch(self) -> Iterator[Event]:
        data, event_type = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return
        yield Event(event_type or "message", "\n".join(data), self._last_event_id)


def parse(chunks: Iterable[bytes]) -> Iterator[Event | Comment]:
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)
