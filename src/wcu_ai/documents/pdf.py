"""Reading a PDF with poppler: `pdfinfo` for pages and metadata, `pdftotext` for the text.

Text comes from ONE `pdftotext` call over the pages wanted, split on the form feed poppler
writes after every page: a call per page costs a process start and a re-parse of the file each
(bench/parse_documents.py measures both). If the split does not give one part per page (a page
whose text holds a form feed itself), it falls back to one call per page.

Reading order mode, not `-layout`: layout mode pads columns with spaces and interleaves
side-by-side columns line by line, which hurts chunking and full-text search.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.documents.process import run_tool, tool_env
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolError,
    ToolMissingError,
    ToolTimeoutError,
)

_FORM_FEED = "\f"


@dataclass(frozen=True, slots=True)
class PdfInfo:
    """What `pdfinfo` says about a PDF."""

    page_count: int
    title: str | None
    author: str | None
    producer: str | None
    encrypted: bool


@dataclass(frozen=True, slots=True)
class PdfContent:
    """A PDF's metadata and its text, one string per page (pages[0] is page 1)."""

    page_count: int
    title: str | None
    author: str | None
    producer: str | None
    encrypted: bool
    pages: tuple[str, ...]


def parse_pdfinfo(output: str) -> PdfInfo:
    """Read `pdfinfo -enc UTF-8` output; a PDF without a page count is refused."""
    fields: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition(":")
        if sep and key and not key.startswith(" ") and key not in fields:
            fields[key.strip()] = value.strip()
    pages_text = fields.get("Pages", "")
    if not pages_text.isdigit():
        raise DocumentError("The PDF has no readable page count; it may be damaged")

    def text(key: str) -> str | None:
        value = _clean(fields.get(key, "")).strip()
        return value or None

    return PdfInfo(
        page_count=int(pages_text),
        title=text("Title"),
        author=text("Author"),
        producer=text("Producer"),
        encrypted=fields.get("Encrypted", "no").startswith("yes"),
    )


async def read_pdf(
    path: Path,
    *,
    max_pages: int,
    timeout: float,
    scratch_dir: Path | None = None,
) -> PdfContent:
    """Metadata and per-page text of the PDF at `path`, within `timeout` seconds in all.

    Raises EncryptedDocumentError for a password-protected PDF, DocumentLimitError past
    `max_pages`, DocumentTimeoutError when poppler runs out of time, DocumentError for an empty,
    damaged or non-PDF file, ToolMissingError when poppler is not installed. `scratch_dir`
    (private HOME and TMPDIR for poppler) defaults to a temporary directory removed on return.
    """
    deadline = time.monotonic() + timeout
    _check_not_empty(path)
    with _scratch(scratch_dir) as scratch:
        # pdftotext runs while pdfinfo does: the two process starts and file parses overlap (the
        # PDF path cost 1.65x a bare pdftotext, bench/run). pdfinfo still decides: its error or a
        # limit it reveals wins, and the text is then not waited for (its process is killed).
        text_task = asyncio.create_task(
            _pdftotext(path, first=1, last=None, deadline=deadline, scratch=scratch)
        )
        try:
            info = await _pdfinfo(path, timeout=timeout, scratch=scratch)
            if info.page_count == 0:
                raise DocumentError("The PDF has no pages")
            if info.page_count > max_pages:
                raise DocumentLimitError(
                    f"The PDF has {info.page_count} pages; the limit is {max_pages} (WCU_DOC_MAX_PAGES)"
                )
            text = await text_task
        except BaseException:
            text_task.cancel()
            await asyncio.gather(text_task, return_exceptions=True)
            raise
        pages = _split_pages(text, info.page_count)
        if pages is None:
            pages = [
                _clean(await _pdftotext(path, first=n, last=n, deadline=deadline, scratch=scratch))
                .replace(_FORM_FEED, "\n")
                .rstrip()
                for n in range(1, info.page_count + 1)
            ]
    return PdfContent(
        page_count=info.page_count,
        title=info.title,
        author=info.author,
        producer=info.producer,
        encrypted=info.encrypted,
        pages=tuple(pages),
    )


def _split_pages(text: str, page_count: int) -> list[str] | None:
    """One string per page, or None when the form feeds do not match the page count."""
    parts = _clean(text).split(_FORM_FEED)
    if parts[-1] == "":
        parts.pop()  # pdftotext ends every page, the last and the empty ones too, with a form feed
    if len(parts) != page_count:
        return None
    return [part.rstrip() for part in parts]


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; poppler passes through whatever the PDF maps glyphs to.
    return text.replace("\x00", "")


def _check_not_empty(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentError(f"The document could not be read: {exc.strerror}") from exc
    if size == 0:
        raise DocumentError("The file is empty (0 bytes); upload the document again")


async def _pdfinfo(path: Path, *, timeout: float, scratch: Path) -> PdfInfo:
    argv = ["pdfinfo", "-enc", "UTF-8", str(path)]
    result = await _run_poppler(argv, timeout=timeout, scratch=scratch)
    return parse_pdfinfo(result)


async def _pdftotext(path: Path, *, first: int, last: int | None, deadline: float, scratch: Path) -> str:
    """The text of pages first..last (last=None: to the end), pages ended by form feeds."""
    pages = ["-f", str(first)] + (["-l", str(last)] if last is not None else [])
    argv = ["pdftotext", "-q", "-enc", "UTF-8", *pages, str(path), "-"]
    return await _run_poppler(argv, timeout=deadline - time.monotonic(), scratch=scratch)


async def _run_poppler(argv: list[str], *, timeout: float, scratch: Path) -> str:
    try:
        result = await run_tool(argv, timeout=timeout, cwd=scratch, env=tool_env(scratch, scratch))
    except ToolMissingError:
        raise
    except ToolTimeoutError as exc:
        raise DocumentTimeoutError(
            f"Reading the PDF took longer than the time allowed ({exc.timeout:.0f} s, "
            "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
        ) from exc
    except ToolError as exc:
        raise _document_error(exc) from exc
    return result.stdout_text


def _document_error(exc: ToolError) -> DocumentError:
    tail = exc.stderr_tail
    if "Incorrect password" in tail:
        return EncryptedDocumentError()
    if exc.returncode == 3 or "not allowed" in tail:
        return DocumentError("The PDF's permissions forbid extracting its text; save it without restrictions")
    reason = tail.splitlines()[-1] if tail else f"exit code {exc.returncode}"
    reason = reason.removeprefix("Syntax Error: ").removeprefix("I/O Error: ").strip()
    if exc.returncode is not None and exc.returncode < 0:
        reason = f"poppler crashed on it (signal {-exc.returncode})"
    return DocumentError(
        f"The PDF is damaged, truncated or not a PDF ({reason}); export it again and re-upload"
    )


@contextlib.contextmanager
def _scratch(scratch_dir: Path | None) -> Iterator[Path]:
    if scratch_dir is not None:
        yield scratch_dir
        return
    with tempfile.TemporaryDirectory(prefix="wcu-pdf-") as tmp:
        yield Path(tmp)
