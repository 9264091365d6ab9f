"""Reading one uploaded file from a multipart body as it streams in.

The size limit is enforced on the bytes as they arrive: an oversized upload is refused with 413
as soon as it crosses the limit (or at once, when Content-Length already says so), so neither
memory nor disk ever holds more than the limit. The file goes to a private temporary file,
hashed on the way; the caller removes it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from fastapi import HTTPException, Request, status
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

# Multipart framing (boundaries, part headers) on top of the file itself.
_FRAMING_ALLOWANCE = 64 * 1024
_MAX_PART_HEADER_BYTES = 16 * 1024


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    filename: str
    content_type: str
    size: int
    sha256: bytes


class _TooLarge(Exception):
    pass


class _Malformed(Exception):
    pass


def clean_filename(raw: str | None) -> str:
    """A display name only (never a path): last path segment, printable, at most 255 characters."""
    name = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = re.sub(r"\s+", " ", name).strip(" .")
    return name[:255] or "document"


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        f"the upload is larger than the limit of {limit} bytes (WCU_UPLOAD_MAX_BYTES)",
    )


@contextlib.asynccontextmanager
async def receive_file(
    request: Request, *, field: str, max_bytes: int, scratch_dir: Path
) -> AsyncIterator[ReceivedFile]:
    """Yields the one file sent in `field`; the temporary file is removed when the block ends."""
    ctype, params = parse_options_header(request.headers.get("content-type"))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"send the document as multipart/form-data with the file in the '{field}' field",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + _FRAMING_ALLOWANCE:
        raise too_large(max_bytes)

    scratch_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=scratch_dir, prefix="upload-")
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            received = await _stream_into(request, out, field=field, boundary=boundary, max_bytes=max_bytes)
        yield ReceivedFile(path=path, **received)
    finally:
        path.unlink(missing_ok=True)


class _FilePart:
    """Multipart parser callbacks that write the `field` file part to `out`, counting and hashing."""

    def __init__(self, out: BinaryIO, *, field: str, max_bytes: int) -> None:
        self.out, self.field, self.max_bytes = out, field, max_bytes
        self.digest = hashlib.sha256()
        self.files = 0
        self.size = 0
        self.filename: str | None = None
        self.content_type = "application/octet-stream"
        self._headers: dict[bytes, bytes] = {}
        self._name = self._value = b""
        self._header_bytes = 0
        self._target = False
        # Only a part closed by its delimiter, in a body closed by the final boundary, is a document:
        # a body cut short (a client or proxy that gave up, a chunked body ended early) is refused.
        self.complete = False
        self.ended = False

    def callbacks(self) -> dict[str, Callable[..., None]]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers, self._header_bytes, self._target = {}, 0, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]
        self._count_header(end - start)

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        self._count_header(end - start)

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > _MAX_PART_HEADER_BYTES:
            raise _Malformed("a part's headers are too large")

    def on_header_end(self) -> None:
        self._headers[self._name.lower()] = self._value
        self._name = self._value = b""

    def on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition.get(b"name", b"").decode("latin-1") != self.field or b"filename" not in disposition:
            return
        self.files += 1
        if self.files > 1:
            raise _Malformed(f"send exactly one file in the '{self.field}' field")
        self._target = True
        self.filename = disposition[b"filename"].decode("utf-8", "replace")
        part_type, _ = parse_options_header(self._headers.get(b"content-type"))
        self.content_type = part_type.decode("latin-1")[:100] or self.content_type

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._target:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            raise _TooLarge
        chunk = data[start:end]
        self.digest.update(chunk)
        self.out.write(chunk)

    def on_part_end(self) -> None:
        if self._target:
            self.complete, self._target = True, False

    def on_end(self) -> None:
        self.ended = True


async def _stream_into(
    request: Request, out: BinaryIO, *, field: str, boundary: bytes, max_bytes: int
) -> dict[str, Any]:
    part = _FilePart(out, field=field, max_bytes=max_bytes)
    parser = MultipartParser(boundary, callbacks=part.callbacks())  # type: ignore[arg-type]
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_bytes + _FRAMING_ALLOWANCE:
                raise _TooLarge
            parser.write(chunk)
        # finalize() does not check that the body was complete (python-multipart 0.0.x): on_end does.
        parser.finalize()
    except _TooLarge:
        raise too_large(max_bytes) from None
    except (_Malformed, MultipartParseError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed multipart body: {exc}") from None
    if not part.ended:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "the multipart body ended before its closing boundary: the upload is incomplete and nothing "
            "was stored; send it again",
        )
    if part.files == 0:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"no file in the '{field}' field of the multipart body"
        )
    if not part.complete:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            f"the '{field}' part is not closed by a boundary: the upload is incomplete, nothing was stored",
        )
    if part.size == 0:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "the uploaded file is empty")
    return {
        "filename": clean_filename(part.filename),
        "content_type": part.content_type,
        "size": part.size,
        "sha256": part.digest.digest(),
    }
