"""Parsing one document end to end: type check, limits, DOCX -> PDF, PDF -> pages -> chunks.

Everything written on the way (the copy handed to LibreOffice, the converted PDF, poppler's
HOME and TMPDIR) lives in one TemporaryDirectory under `work_dir`, removed on return, on
error and on cancellation alike. The time limit covers the whole document: each tool gets what
is left of it.

LibreOffice never sees the uploaded DOCX: it converts the copy ooxml.rewrite_package writes,
after the package's structure has passed its limits (sizes, XML depth, no DTD). Both run in a
worker thread so the runner's event loop (leases, heartbeats) keeps going meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.documents.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, Chunk, chunk_pages
from wcu_ai.documents.detect import DocumentKind, check_docx_safe, detect_type
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.ooxml import PackageLimits, RewriteReport, rewrite_package
from wcu_ai.documents.pdf import read_pdf
from wcu_ai.errors import DocumentError, DocumentLimitError, DocumentTimeoutError
from wcu_ai.settings import Settings

logger = logging.getLogger(__name__)


_SETTINGS = Settings.model_fields


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    """The limits one document is held to (WCU_UPLOAD_MAX_BYTES, WCU_DOC_* settings).

    The defaults are the settings' own, so the two cannot drift apart.
    """

    max_pages: int = _SETTINGS["doc_max_pages"].default
    timeout_seconds: float = _SETTINGS["doc_timeout_seconds"].default
    docx_max_uncompressed_bytes: int = _SETTINGS["docx_max_uncompressed_bytes"].default
    docx_max_part_bytes: int = _SETTINGS["docx_max_part_bytes"].default
    docx_max_xml_depth: int = _SETTINGS["docx_max_xml_depth"].default
    max_pdf_bytes: int = _SETTINGS["doc_max_pdf_bytes"].default
    max_input_bytes: int = _SETTINGS["upload_max_bytes"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentLimits:
        return cls(
            max_pages=settings.doc_max_pages,
            timeout_seconds=settings.doc_timeout_seconds,
            docx_max_uncompressed_bytes=settings.docx_max_uncompressed_bytes,
            docx_max_part_bytes=settings.docx_max_part_bytes,
            docx_max_xml_depth=settings.docx_max_xml_depth,
            max_pdf_bytes=settings.doc_max_pdf_bytes,
            max_input_bytes=settings.upload_max_bytes,
        )

    @property
    def package(self) -> PackageLimits:
        return PackageLimits(
            max_uncompressed_bytes=self.docx_max_uncompressed_bytes,
            max_part_bytes=self.docx_max_part_bytes,
            max_xml_depth=self.docx_max_xml_depth,
        )


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parsed document: metadata, text per page (pages[0] is page 1), chunks and sizes."""

    kind: DocumentKind
    page_count: int
    title: str | None
    author: str | None
    producer: str | None
    pages: tuple[str, ...]
    chunks: tuple[Chunk, ...]
    source_bytes: int
    pdf_bytes: int
    seconds: float

    @property
    def text(self) -> str:
        """The whole text, pages separated by a blank line."""
        return "\n\n".join(self.pages)

    @property
    def text_chars(self) -> int:
        return sum(len(page) for page in self.pages)


async def parse_document(
    path: Path,
    *,
    kind: DocumentKind | None = None,
    converter: OfficeConverter | None,
    limits: DocumentLimits,
    work_dir: Path | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> ParsedDocument:
    """Parse the PDF or DOCX at `path`.

    `kind`, when given (the type the API detected at upload), must match the bytes. A DOCX
    needs `converter`. Raises a DocumentError subclass with a reason a user can act on for
    anything wrong with the document, ToolMissingError when a tool is not installed.
    """
    started = time.monotonic()
    deadline = started + limits.timeout_seconds
    source_bytes = _checked_size(path, limits.max_input_bytes)
    detected = detect_type(path)
    if detected is None:
        raise DocumentError(
            "The file is neither a PDF nor a DOCX (judged by its content, not its name); "
            "upload a .pdf or .docx file"
        )
    if kind is not None and kind != detected:
        raise DocumentError(f"The file was declared {kind.upper()} but its content is {detected.upper()}")
    if detected == "docx" and converter is None:
        raise ValueError("parsing a DOCX needs an OfficeConverter")
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(dir=work_dir, prefix="wcu-parse-") as tmp_name:
        tmp = Path(tmp_name)
        scratch = tmp / "scratch"
        scratch.mkdir(mode=0o700)
        if detected == "docx":
            assert converter is not None
            # LibreOffice names its output after the input: give it a fixed, harmless name.
            source = tmp / "source.docx"
            stop = threading.Event()
            preparing = asyncio.ensure_future(
                asyncio.to_thread(_prepare_docx, path, source, scratch, limits, deadline, stop)
            )
            try:
                await asyncio.shield(preparing)
            except asyncio.CancelledError:
                # The thread cannot be cancelled: tell it to stop, and wait for it (a chunk's
                # work) before this directory goes, so nothing is written after its removal.
                stop.set()
                await asyncio.wait([preparing])
                if not preparing.cancelled():
                    preparing.exception()  # retrieved: the cancellation is what matters
                raise
            pdf_path = await converter.convert_to_pdf(source, tmp / "pdf", timeout=_left(deadline, limits))
        else:
            pdf_path = path
        pdf_bytes = pdf_path.stat().st_size
        if pdf_bytes > limits.max_pdf_bytes:
            raise DocumentLimitError(
                f"The PDF is {pdf_bytes} bytes; the limit is {limits.max_pdf_bytes} (WCU_DOC_MAX_PDF_BYTES)"
            )
        content = await read_pdf(
            pdf_path, max_pages=limits.max_pages, timeout=_left(deadline, limits), scratch_dir=scratch
        )

    chunks = chunk_pages(content.pages, max_chars=max_chars, overlap=overlap)
    parsed = ParsedDocument(
        kind=detected,
        page_count=content.page_count,
        title=content.title,
        author=content.author,
        producer=content.producer,
        pages=content.pages,
        chunks=tuple(chunks),
        source_bytes=source_bytes,
        pdf_bytes=pdf_bytes,
        seconds=time.monotonic() - started,
    )
    logger.info(
        "document parsed",
        extra={
            "action": "document_parsed",
            "kind": detected,
            "pages": parsed.page_count,
            "chunks": len(chunks),
            "seconds": round(parsed.seconds, 3),
        },
    )
    return parsed


def _prepare_docx(
    path: Path, dst: Path, scratch: Path, limits: DocumentLimits, deadline: float, stop: threading.Event
) -> RewriteReport:
    """Check the package, then write the copy of it that LibreOffice converts."""
    check_docx_safe(
        path, limits.docx_max_uncompressed_bytes, max_part_bytes=limits.docx_max_part_bytes, stop=stop
    )
    report = rewrite_package(
        path,
        dst,
        limits=limits.package,
        deadline=deadline,
        timeout_seconds=limits.timeout_seconds,
        scratch_dir=scratch,
        stop=stop,
    )
    if report.changed:
        logger.info(
            "docx rewritten: what points outside the package removed",
            extra={"action": "docx_rewritten", **report.as_dict()},
        )
    return report


def _checked_size(path: Path, max_bytes: int) -> int:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentError(f"The document could not be read: {exc.strerror}") from exc
    if size == 0:
        raise DocumentError("The file is empty (0 bytes); upload the document again")
    if size > max_bytes:
        raise DocumentLimitError(f"The file is {size} bytes; the limit is {max_bytes} (WCU_UPLOAD_MAX_BYTES)")
    return size


def _left(deadline: float, limits: DocumentLimits) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DocumentTimeoutError(
            f"Parsing the document took longer than the time allowed ({limits.timeout_seconds:.0f} s, "
            "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
        )
    return left
