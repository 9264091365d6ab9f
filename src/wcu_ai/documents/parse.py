"""Parsing one document end to end: type check, limits, DOCX -> PDF, PDF -> pages (OCR for pages
without a text layer) -> chunks.

Everything written on the way (the copy handed to LibreOffice, the converted PDF, page images
for OCR and the HOME and TMPDIR of the tools that make them) lives in one TemporaryDirectory
under `work_dir`, removed on return, on error and on cancellation alike. It is made only when
something needs it: a PDF with a text layer needs none (pdftotext may write nothing), and
making and removing a directory cost more than the rest of our path on a busy disk.

The time limit covers the whole document: each tool gets what is left of it. What a document
may produce is bounded too: characters per page and in all, chunks; past a limit the document
is refused with a reason naming the setting.

LibreOffice never sees the uploaded DOCX: it converts the copy ooxml.rewrite_package writes,
after the package's structure has passed its limits (sizes, XML depth, no DTD). Both run in a
worker thread so the runner's event loop (leases, heartbeats) keeps going meanwhile.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from wcu_ai.documents.chunking import DEFAULT_MAX_CHARS, DEFAULT_OVERLAP, Chunk, iter_chunks
from wcu_ai.documents.detect import DocumentKind, check_docx_safe, detect_type
from wcu_ai.documents.ocr import OcrOptions, ocr_pages, pages_without_text, visible_chars
from wcu_ai.documents.office import OfficeConverter
from wcu_ai.documents.ooxml import PackageLimits, RewriteReport, rewrite_package
from wcu_ai.documents.pdf import nonempty_size, read_pdf
from wcu_ai.documents.process import ToolLimits
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
    max_text_chars: int = _SETTINGS["doc_max_text_chars"].default
    max_page_chars: int = _SETTINGS["doc_max_page_chars"].default
    max_chunks: int = _SETTINGS["doc_max_chunks"].default
    poppler_memory_bytes: int | None = _SETTINGS["poppler_max_memory_bytes"].default
    poppler_cpu_seconds: int | None = _SETTINGS["poppler_max_cpu_seconds"].default
    ocr: OcrOptions = field(default_factory=OcrOptions)

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
            max_text_chars=settings.doc_max_text_chars,
            max_page_chars=settings.doc_max_page_chars,
            max_chunks=settings.doc_max_chunks,
            poppler_memory_bytes=settings.poppler_max_memory_bytes,
            poppler_cpu_seconds=settings.poppler_max_cpu_seconds,
            ocr=OcrOptions.from_settings(settings),
        )

    @property
    def poppler(self) -> ToolLimits:
        return ToolLimits(memory_bytes=self.poppler_memory_bytes, cpu_seconds=self.poppler_cpu_seconds)

    @property
    def package(self) -> PackageLimits:
        return PackageLimits(
            max_uncompressed_bytes=self.docx_max_uncompressed_bytes,
            max_part_bytes=self.docx_max_part_bytes,
            max_xml_depth=self.docx_max_xml_depth,
        )


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A parsed document: metadata, text per page (pages[0] is page 1), chunks and sizes.

    ocr_pages: the 1-based numbers of the pages whose text came from OCR.
    """

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
    ocr_pages: tuple[int, ...] = ()

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

    with _WorkArea(work_dir) as area:
        if detected == "docx":
            assert converter is not None
            # LibreOffice names its output after the input: give it a fixed, harmless name.
            source = area.path / "source.docx"
            stop = threading.Event()
            preparing = asyncio.ensure_future(
                asyncio.to_thread(_prepare_docx, path, source, area.scratch(), limits, deadline, stop)
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
            pdf_path = await converter.convert_to_pdf(
                source, area.path / "pdf", timeout=_left(deadline, limits)
            )
        else:
            pdf_path = path
        pdf_bytes = pdf_path.stat().st_size
        if pdf_bytes > limits.max_pdf_bytes:
            raise DocumentLimitError(
                f"The PDF is {pdf_bytes} bytes; the limit is {limits.max_pdf_bytes} (WCU_DOC_MAX_PDF_BYTES)"
            )
        content = await read_pdf(
            pdf_path,
            max_pages=limits.max_pages,
            timeout=_left(deadline, limits),
            max_text_chars=limits.max_text_chars,
            limits=limits.poppler,
        )
        pages = list(content.pages)
        check_text_limits(pages, max_page_chars=limits.max_page_chars, max_text_chars=limits.max_text_chars)
        from_ocr: list[int] = []
        if limits.ocr.enabled and (scanned := pages_without_text(pages)):
            texts = await ocr_pages(
                pdf_path,
                scanned,
                options=limits.ocr,
                poppler_limits=limits.poppler,
                max_page_chars=limits.max_page_chars,
                deadline=deadline,
                scratch=area.scratch(),
            )
            for number, text in sorted(texts.items()):
                if visible_chars(text) > visible_chars(pages[number - 1]):
                    pages[number - 1] = text
                    from_ocr.append(number)
            check_text_limits(
                pages, max_page_chars=limits.max_page_chars, max_text_chars=limits.max_text_chars
            )

    chunks = list(
        itertools.islice(iter_chunks(pages, max_chars=max_chars, overlap=overlap), limits.max_chunks + 1)
    )
    if len(chunks) > limits.max_chunks:
        raise DocumentLimitError(
            f"The document's text makes more than {limits.max_chunks:,} chunks, the limit "
            "(WCU_DOC_MAX_CHUNKS); split the document"
        )
    parsed = ParsedDocument(
        kind=detected,
        page_count=content.page_count,
        title=content.title,
        author=content.author,
        producer=content.producer,
        pages=tuple(pages),
        chunks=tuple(chunks),
        source_bytes=source_bytes,
        pdf_bytes=pdf_bytes,
        seconds=time.monotonic() - started,
        ocr_pages=tuple(from_ocr),
    )
    logger.info(
        "document parsed",
        extra={
            "action": "document_parsed",
            "kind": detected,
            "pages": parsed.page_count,
            "chunks": len(chunks),
            "text_chars": parsed.text_chars,
            "ocr_pages": len(from_ocr),
            "seconds": round(parsed.seconds, 3),
        },
    )
    return parsed


class _WorkArea:
    """The document's TemporaryDirectory under `work_dir`, made on first use, removed on exit."""

    def __init__(self, work_dir: Path | None) -> None:
        self._work_dir = work_dir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def path(self) -> Path:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(dir=self._work_dir, prefix="wcu-parse-")
        return Path(self._tmp.name)

    def scratch(self) -> Path:
        """A private HOME and TMPDIR for the tools."""
        scratch = self.path / "scratch"
        scratch.mkdir(mode=0o700, exist_ok=True)
        return scratch

    def __enter__(self) -> _WorkArea:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def check_text_limits(pages: list[str], *, max_page_chars: int, max_text_chars: int) -> None:
    """DocumentLimitError naming the setting when a page or the whole text is too long (pure)."""
    for number, text in enumerate(pages, start=1):
        if len(text) > max_page_chars:
            raise DocumentLimitError(
                f"Page {number} has {len(text):,} characters; the limit per page is {max_page_chars:,} "
                "(WCU_DOC_MAX_PAGE_CHARS); so much text on one page is usually hidden or repeated "
                "content: export the document again without it, or split that page's text over several pages"
            )
    total = sum(len(text) for text in pages)
    if total > max_text_chars:
        raise DocumentLimitError(
            f"The document's text has {total:,} characters; the limit is {max_text_chars:,} "
            "(WCU_DOC_MAX_TEXT_CHARS); split the document"
        )


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
    size = nonempty_size(path)
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
