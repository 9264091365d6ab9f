"""Telling a document's type from its bytes, and refusing DOCX files that would blow up.

The file name and the client's content type are never trusted: a PDF has `%PDF-` in its first
1024 bytes (where readers look for it); a DOCX is a readable zip whose own structure says it is a
Word document (ooxml.main_part: `_rels/.rels` names the main part, `[Content_Types].xml` gives
its type). DOCM, DOTX and DOTM count as DOCX: they are read like one, and their macros never run.
"""

from __future__ import annotations

import threading
import zipfile
import zlib
from pathlib import Path
from typing import Literal

from wcu_ai.documents import ooxml
from wcu_ai.errors import DocumentError, DocumentLimitError

DocumentKind = Literal["pdf", "docx"]

#: MIME type stored for each kind.
CONTENT_TYPES: dict[str, str] = {
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}

_HEAD_BYTES = 1024
_ZIP_MAGIC = b"PK\x03\x04"

MAX_COMPRESSION_RATIO = ooxml.MAX_COMPRESSION_RATIO
MAX_ZIP_MEMBERS = ooxml.MAX_ZIP_MEMBERS
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
            ooxml.main_part(archive)
    except DocumentLimitError:
        # An Office package whose structure is too big to read: it is taken as a DOCX so that
        # parsing refuses it with the limit, rather than "not a document".
        return True
    except (DocumentError, *_BROKEN_ZIP, OSError):
        return False
    return True


def check_docx_safe(
    path: Path,
    max_uncompressed_bytes: int,
    *,
    max_part_bytes: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Refuse a DOCX that is a broken zip, a zip bomb or not a Word document; return its uncompressed size.

    Cheapest first: the zip's directory (member count, duplicate names, declared sizes against
    the total and the per-part limit, each member's compression ratio), then the package
    structure, then the bytes actually inflated (headers can lie), stopping as soon as a limit is
    passed. Reading every member also verifies their CRCs. Setting `stop` ends the inflating
    (ooxml.RewriteStoppedError) within one chunk.
    """
    limits = {
        "max_uncompressed_bytes": max_uncompressed_bytes,
        "max_part_bytes": max_part_bytes if max_part_bytes is not None else max_uncompressed_bytes,
    }
    try:
        with zipfile.ZipFile(path) as archive:
            members = ooxml.check_zip(archive, **limits)
            ooxml.main_part(archive)
            return ooxml.inflate_all(archive, members, **limits, stop=stop)
    except DocumentError:
        raise
    except _BROKEN_ZIP as exc:
        raise DocumentError(
            f"The DOCX is damaged (its zip structure cannot be read: {exc}); save it again and re-upload"
        ) from exc
    except OSError as exc:
        raise DocumentError(f"The DOCX could not be read: {exc}") from exc
