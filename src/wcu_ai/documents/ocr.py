"""OCR for pages without a text layer: pdftoppm renders the page, Tesseract reads the image.

Which pages: those whose text layer has fewer than MIN_TEXT_CHARS characters other than
whitespace and that show an image (image-only scans, fax pages, a page that is one inline image).
A page with a text layer is never OCRed, nor is a blank one (no text, no image: blank pages must
not use up the OCR budget of a long document); OCR text replaces a page's text only when it holds
more. Text drawn as vector outlines, without a font or an image, is not OCRed.

Bounds, on top of the document's own time limit (each tool gets what is left of it):
- at most `max_pages` pages per document: a document with more pages to OCR is refused before
  any OCR runs, naming WCU_OCR_MAX_PAGES;
- pages are rendered at `dpi`, lowered for pages larger than A3 so that no image has more pixels
  than an A3 page at `dpi` (a poster-sized page would otherwise be gigabytes); pdftoppm runs
  under the poppler limits with its file size fixed in advance;
- Tesseract runs under its own memory and CPU limits, on one thread (OMP_THREAD_LIMIT=1: the
  runner's worker slots are the parallelism), and its output is read only up to what
  `max_page_chars` characters can take.
"""

from __future__ import annotations

import math
import re
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.documents.pdf import PageSize, page_sizes, pages_with_images, render_page
from wcu_ai.documents.process import ToolLimits, run_tool, tool_env
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    ToolError,
    ToolMissingError,
    ToolOutputLimitError,
    ToolTimeoutError,
)
from wcu_ai.settings import Settings

#: A page whose text layer has fewer characters than this (whitespace aside) is OCRed.
MIN_TEXT_CHARS = 10

_A3_POINTS = (842.0, 1191.0)
_LANGUAGE_FAILED = "Failed loading language"
# How a tool short of address space fails when it does not crash: the loader cannot map a library.
_OUT_OF_MEMORY = re.compile(r"failed to map segment|cannot allocate memory|out of memory", re.I)
_SETTINGS = Settings.model_fields


@dataclass(frozen=True, slots=True)
class OcrOptions:
    """How pages without a text layer are OCRed (WCU_OCR_* settings; defaults are theirs)."""

    enabled: bool = _SETTINGS["ocr_enabled"].default
    languages: str = _SETTINGS["ocr_languages"].default
    dpi: int = _SETTINGS["ocr_dpi"].default
    max_pages: int = _SETTINGS["ocr_max_pages"].default
    memory_bytes: int | None = _SETTINGS["ocr_max_memory_bytes"].default
    cpu_seconds: int | None = _SETTINGS["ocr_max_cpu_seconds"].default

    @classmethod
    def from_settings(cls, settings: Settings) -> OcrOptions:
        return cls(
            enabled=settings.ocr_enabled,
            languages=settings.ocr_languages,
            dpi=settings.ocr_dpi,
            max_pages=settings.ocr_max_pages,
            memory_bytes=settings.ocr_max_memory_bytes,
            cpu_seconds=settings.ocr_max_cpu_seconds,
        )

    @property
    def tesseract_limits(self) -> ToolLimits:
        # Tesseract writes its text to stdout and nothing to files.
        return ToolLimits(memory_bytes=self.memory_bytes, cpu_seconds=self.cpu_seconds, file_bytes=0)


def pages_without_text(pages: list[str] | tuple[str, ...]) -> list[int]:
    """1-based numbers of the pages whose text layer is (nearly) empty (pure)."""
    # Most pages show enough text in their first lines: only the others are counted in full.
    return [
        number
        for number, text in enumerate(pages, start=1)
        if visible_chars(text[:256]) < MIN_TEXT_CHARS and visible_chars(text) < MIN_TEXT_CHARS
    ]


def visible_chars(text: str) -> int:
    """Characters other than whitespace (split and join run in C: every page of every document)."""
    return len("".join(text.split()))


def render_dpi(size: PageSize, dpi: int) -> int:
    """The resolution to render a page at: `dpi`, or less so the image has no more pixels than A3 at `dpi` (pure)."""
    area = max(size.width, 1.0) * max(size.height, 1.0)
    largest = _A3_POINTS[0] * _A3_POINTS[1]
    if area <= largest:
        return dpi
    return max(1, math.floor(dpi * math.sqrt(largest / area)))


async def ocr_pages(
    pdf: Path,
    numbers: list[int],
    *,
    options: OcrOptions,
    poppler_limits: ToolLimits | None,
    max_page_chars: int,
    deadline: float,
    scratch: Path,
) -> dict[int, str]:
    """The OCR text of each page of `numbers` (1-based) that shows an image, page by page, within
    `deadline` (monotonic); pages without an image are left out.

    Raises DocumentLimitError for more than options.max_pages pages or a page whose text is
    longer than `max_page_chars`, DocumentTimeoutError when the deadline passes, DocumentError
    when Tesseract fails (missing language data, its limits), ToolMissingError when pdftoppm or
    Tesseract is not installed.
    """
    if not numbers:
        return {}
    with_images = await pages_with_images(
        pdf, min(numbers), max(numbers), timeout=_left(deadline), scratch=scratch, limits=poppler_limits
    )
    if with_images is not None:
        numbers = [number for number in numbers if number in with_images]
    if not numbers:
        return {}
    if len(numbers) > options.max_pages:
        raise DocumentLimitError(
            f"The PDF has {len(numbers)} pages without a text layer; OCR is limited to {options.max_pages} "
            "pages per document (WCU_OCR_MAX_PAGES); split the document"
        )
    sizes = await page_sizes(
        pdf, min(numbers), max(numbers), timeout=_left(deadline), scratch=scratch, limits=poppler_limits
    )
    texts: dict[int, str] = {}
    for number in numbers:
        size = sizes.get(number)
        if size is None:
            raise DocumentError(f"poppler gave no size for page {number}; export the PDF again and re-upload")
        dpi = render_dpi(size, options.dpi)
        image = await render_page(
            pdf,
            number,
            dpi=dpi,
            size=size,
            out=scratch / "ocr-page",
            timeout=_left(deadline),
            scratch=scratch,
            limits=poppler_limits,
        )
        try:
            texts[number] = await read_image(
                image,
                languages=options.languages,
                dpi=dpi,
                limits=options.tesseract_limits,
                max_chars=max_page_chars,
                timeout=_left(deadline),
                scratch=scratch,
                page=number,
            )
        finally:
            image.unlink(missing_ok=True)
    return texts


async def read_image(
    image: Path,
    *,
    languages: str,
    dpi: int,
    limits: ToolLimits | None,
    max_chars: int,
    timeout: float,
    scratch: Path,
    page: int,
) -> str:
    """Tesseract's text of one page image (`page` names it in errors)."""
    argv = ["tesseract", str(image), "stdout", "-l", languages, "--dpi", str(dpi)]
    env = tool_env(scratch, scratch)
    env["OMP_THREAD_LIMIT"] = "1"
    try:
        result = await run_tool(
            argv, timeout=timeout, cwd=scratch, env=env, limits=limits, max_stdout_bytes=4 * max_chars + 4096
        )
    except ToolMissingError as exc:
        raise ToolMissingError(
            f"{exc.message}; OCR of scanned pages needs it (or set WCU_OCR_ENABLED=false)"
        ) from exc
    except ToolOutputLimitError as exc:
        raise _page_limit_error(page, max_chars) from exc
    except ToolTimeoutError as exc:
        raise DocumentTimeoutError(
            f"OCR of the document took longer than the time allowed ({exc.timeout:.0f} s left at page "
            f"{page}, WCU_DOC_TIMEOUT_SECONDS); split the document"
        ) from exc
    except ToolError as exc:
        raise _ocr_error(exc, page, languages) from exc
    if _LANGUAGE_FAILED in result.stderr_text:
        # With several languages Tesseract goes on with those it could load and exits 0.
        raise _language_error(languages)
    # Tesseract ends the page with a form feed; PostgreSQL text cannot hold NUL.
    text = result.stdout_text.replace("\f", "").replace("\x00", "").rstrip()
    if len(text) > max_chars:
        raise _page_limit_error(page, max_chars)
    return text


def _page_limit_error(page: int, max_chars: int) -> DocumentLimitError:
    return DocumentLimitError(
        f"Page {page} has more than {max_chars:,} characters, the limit per page (WCU_DOC_MAX_PAGE_CHARS)"
    )


def _language_error(languages: str) -> DocumentError:
    return DocumentError(
        f"OCR could not load the language data for {languages!r} (WCU_OCR_LANGUAGES): install "
        "Tesseract's data for each language (Debian: tesseract-ocr-<lang>)"
    )


def _ocr_error(exc: ToolError, page: int, languages: str) -> DocumentError:
    tail = exc.stderr_tail
    if _LANGUAGE_FAILED in tail or "load any languages" in tail:
        return _language_error(languages)
    if exc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        # RLIMIT_CPU's soft and hard limit are one: the kernel's SIGXCPU comes with SIGKILL.
        return DocumentLimitError(
            f"OCR of page {page} was stopped: Tesseract used up its CPU time (WCU_OCR_MAX_CPU_SECONDS) "
            "or the system ran out of memory"
        )
    if (exc.returncode is not None and exc.returncode < 0) or _OUT_OF_MEMORY.search(tail):
        return DocumentLimitError(
            f"OCR of page {page} stopped ({exc.message}): Tesseract ran out of the memory allowed "
            "(WCU_OCR_MAX_MEMORY_BYTES) or crashed"
        )
    reason = tail.splitlines()[-1] if tail else f"exit code {exc.returncode}"
    return DocumentError(f"OCR of page {page} failed ({reason})")


def _left(deadline: float) -> float:
    return deadline - time.monotonic()
