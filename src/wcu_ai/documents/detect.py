"""Telling a document's type from its bytes, and refusing DOCX files that would blow up.

The file name and the client's content type are never trusted: a PDF has `%PDF-` in its first
1024 bytes (where readers look for it); a DOCX is a readable zip whose own structure says it is a
Word document (ooxml.main_part: `_rels/.rels` names the main part, `[Content_Types].xml` gives
its type). DOCM, DOTX and DOTM count as DOCX: they are read like one, and their macros never run.
"""

from __future__ import annotations

import threading
import zipfile
from pathlib import Path
from typing import BinaryIO, Literal

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


_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# The stream an encrypted OOXML file keeps its package in (MS-OFFCRYPTO), as the compound file's
# directory spells it.
_ENCRYPTED_PACKAGE = "EncryptedPackage".encode("utf-16-le")
_SCAN_BYTES = 1 << 20

_UNSUPPORTED = (
    "unsupported document type: send a PDF or a DOCX (the type is read from the content, not the name)"
)


def unsupported_reason(path: Path) -> str:
    """Why a file detect_type refused is not a document, in words a user can act on.

    A password-protected DOCX is no zip at all but an OLE compound file holding the encrypted
    package; a zip that fails the DOCX checks is either damaged or not a Word document.
    """
    try:
        with path.open("rb") as fh:
            head = fh.read(_HEAD_BYTES)
            if head.startswith(_OLE_MAGIC):
                return _ole_reason(fh, head)
    except OSError:
        return _UNSUPPORTED
    if head.startswith(_ZIP_MAGIC):
        return _zip_reason(path)
    return _UNSUPPORTED


def _ole_reason(fh: BinaryIO, head: bytes) -> str:
    # The upload is bounded (WCU_UPLOAD_MAX_BYTES) and read a MiB at a time; the name may straddle
    # two reads, so each read keeps the previous one's tail.
    tail = head
    while True:
        if _ENCRYPTED_PACKAGE in tail:
            return (
                f"{_UNSUPPORTED}. The DOCX is password-protected: remove the password (in Word: File, "
                "Info, Protect Document, Encrypt with Password, clear it), save, and upload it again"
            )
        block = fh.read(_SCAN_BYTES)
        if not block:
            break
        tail = tail[-len(_ENCRYPTED_PACKAGE) :] + block
    return (
        f"{_UNSUPPORTED}. The file is an older Office document (an OLE compound file such as a Word "
        "97-2003 .doc): open it in Word or LibreOffice, save it as .docx and upload that"
    )


def _zip_reason(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            ooxml.main_part(archive)
    except DocumentError as exc:
        return (
            f"{_UNSUPPORTED}. The DOCX is damaged or is not a Word document: {exc}. If it is one, open and "
            "save it again in Word or LibreOffice and re-upload"
        )
    except (*ooxml.BROKEN_ZIP, OSError) as exc:
        return (
            f"{_UNSUPPORTED}. The DOCX is damaged (its zip structure cannot be read: {exc}); it may have been "
            "cut short in transfer: save it again and re-upload"
        )
    return _UNSUPPORTED


def _is_docx(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            ooxml.main_part(archive)
    except DocumentLimitError:
        # An Office package whose structure is too big to read: it is taken as a DOCX so that
        # parsing refuses it with the limit, rather than "not a document".
        return True
    except (DocumentError, *ooxml.BROKEN_ZIP, OSError):
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
    except ooxml.BROKEN_ZIP as exc:
        raise DocumentError(
            f"The DOCX is damaged (its zip structure cannot be read: {exc}); save it again and re-upload"
        ) from exc
    except OSError as exc:
        raise DocumentError(f"The DOCX could not be read: {exc}") from exc
