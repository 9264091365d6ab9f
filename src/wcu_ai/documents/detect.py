"""Telling a document's type from its bytes, and refusing DOCX files that would blow up.

The file name and the client's content type are never trusted: a PDF has `%PDF-` in its first
1024 bytes (where readers look for it), a DOCX is a readable zip holding `word/document.xml`.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Literal

from wcu_ai.errors import DocumentError, DocumentLimitError

DocumentKind = Literal["pdf", "docx"]

#: MIME type stored for each kind.
CONTENT_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

_HEAD_BYTES = 1024
_ZIP_MAGIC = b"PK\x03\x04"
_DOCX_PART = "word/document.xml"

# A member may expand this many times its compressed size before it counts as a bomb; real
# DOCX XML stays well under 100x. Small members are exempt: a 20 kB run of spaces is harmless.
MAX_COMPRESSION_RATIO = 200
_RATIO_EXEMPT_BYTES = 1024 * 1024
MAX_ZIP_MEMBERS = 10_000
_READ_CHUNK = 64 * 1024
_BROKEN_ZIP = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    ValueError,
    NotImplementedError,
)


def detect_type(path: Path) -> DocumentKind | None:
    """'pdf' or 'docx' from the file's bytes, None for anything else (including a broken zip)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
    except OSError:
        return None
    # A zip is checked first: a DOCX may store a PDF uncompressed, %PDF- and all, near its start.
    if head.startswith(_ZIP_MAGIC):
        return "docx" if _is_docx(path) else None
    if b"%PDF-" in head:
        return "pdf"
    return None


def _is_docx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.getinfo(_DOCX_PART)
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, ValueError):
        return False
    return True


def check_docx_safe(path: Path, max_uncompressed_bytes: int) -> int:
    """Refuse a DOCX that is a broken zip or a zip bomb; return its uncompressed size.

    Three checks, cheapest first: the sizes the zip declares, the compression ratio of each
    member, then the bytes actually inflated (headers can lie), stopping as soon as the limit
    is passed. Reading every member also verifies their CRCs.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            if len(members) > MAX_ZIP_MEMBERS:
                raise DocumentLimitError(
                    f"The DOCX holds {len(members)} files; more than {MAX_ZIP_MEMBERS} is not a "
                    "plausible document"
                )
            if _DOCX_PART not in {info.filename for info in members}:
                raise DocumentError("The file is a zip but not a DOCX (it has no word/document.xml)")
            declared = sum(info.file_size for info in members)
            if declared > max_uncompressed_bytes:
                raise DocumentLimitError(_too_big(declared, max_uncompressed_bytes))
            for info in members:
                ratio = info.file_size / max(info.compress_size, 1)
                if info.file_size > _RATIO_EXEMPT_BYTES and ratio > MAX_COMPRESSION_RATIO:
                    raise DocumentLimitError(
                        f"The DOCX looks like a zip bomb: {info.filename} expands {ratio:.0f} times "
                        f"(more than {MAX_COMPRESSION_RATIO}); it was not opened"
                    )
            inflated = 0
            for info in members:
                with archive.open(info) as member:
                    while block := member.read(_READ_CHUNK):
                        inflated += len(block)
                        if inflated > max_uncompressed_bytes:
                            raise DocumentLimitError(_too_big(inflated, max_uncompressed_bytes))
    except DocumentError:
        raise
    except _BROKEN_ZIP as exc:
        raise DocumentError(
            f"The DOCX is damaged (its zip structure cannot be read: {exc}); save it again and re-upload"
        ) from exc
    except OSError as exc:
        raise DocumentError(f"The DOCX could not be read: {exc}") from exc
    return inflated


def _too_big(size: int, limit: int) -> str:
    return (
        f"The DOCX expands to more than {limit} bytes uncompressed (at least {size}); "
        "the limit is WCU_DOCX_MAX_UNCOMPRESSED_BYTES"
    )
