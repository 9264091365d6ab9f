"""Reading a PDF with poppler: one `pdftotext -htmlmeta` run gives the metadata and every page's text;
`pdfimages -list` (which pages show images), `pdfinfo` (page sizes) and `pdftoppm` (page images)
run only for documents with pages that may need OCR.

One process per document. `-htmlmeta` writes the Info dictionary's Title, Author and Producer,
entity-escaped, in an HTML head before the text; the text itself is written raw between `<pre>` and
`</pre>`, and every page, an empty one too, ends with a form feed. Run with `-l max_pages + 1`, the
form feeds count the pages and decide the page limit without reading further. With pdfinfo as a
second process for the page count and metadata, a document cost 1.23-1.87x a bare pdftotext
(bench/run).

Which form feeds end a page: poppler writes a page as lines, each ended by a newline, plus one
newline after each text flow, then the form feed; an empty page is the form feed alone. A lone
form-feed character in the text is whitespace to poppler and dropped, but a ToUnicode entry that
maps one code to several characters can slip one into a line: such a form feed, not after a blank
line or another page, is read as a space.

Bounds: every poppler process runs under `limits` (address space and CPU seconds; no file
writes except pdftoppm's image, which is sized in advance). pdftotext's output is read only up to
what `max_text_chars` characters can take in UTF-8 (at most 4 bytes each) plus the HTML around
them: past that the tool is killed and the document refused, so a small file that expands to
gigabytes of text never reaches memory.

Reading order mode, not `-layout`: layout mode pads columns with spaces and interleaves
side-by-side columns line by line, which hurts chunking and full-text search.
"""

from __future__ import annotations

import dataclasses
import html
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.documents.process import ToolLimits, run_tool, tool_env
from wcu_ai.errors import (
    DocumentError,
    DocumentLimitError,
    DocumentTimeoutError,
    EncryptedDocumentError,
    ToolError,
    ToolMissingError,
    ToolOutputLimitError,
    ToolTimeoutError,
)
from wcu_ai.settings import Settings

_DEFAULT_MAX_TEXT_CHARS: int = Settings.model_fields["doc_max_text_chars"].default

_FORM_FEED = "\f"
# HOME and TMPDIR of a poppler run that must write nothing: the conventional home of no one.
_NO_HOME = Path("/nonexistent")
_HEAD_END = "</head>\n<body>\n<pre>\n"
_TAIL = "</pre>\n</body>\n</html>\n"
# Title, author and producer as stored and listed: a PDF's info dictionary may hold megabytes.
MAX_METADATA_CHARS = 500
_TITLE = re.compile(r"<title>(.*?)</title>\n", re.S)
_META = re.compile(r'<meta name="(\w+)" content="(.*?)"/>\n', re.S)
_PAGE_SIZE = re.compile(r"^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts", re.M)
_IMAGE_ROW = re.compile(r"^\s*(\d+)\s+\d+\s+\w", re.M)
# pdfimages -list prints ~100 bytes per image; a listing past this many is not read to its end.
_IMAGE_LIST_BYTES = 8 * 1024 * 1024
# Room in pdftotext's output, on top of the text, for the HTML head and for the form feed and
# blank line that end each page.
_HEAD_BYTES = 64 * 1024
_PER_PAGE_BYTES = 4
# How a tool short of address space fails when it does not crash: poppler's allocator says so, or
# the loader cannot map a library.
_OUT_OF_MEMORY = re.compile(r"failed to map segment|cannot allocate memory|out of memory", re.I)
# Signals poppler dies of when an allocation fails past its address-space limit (or when it crashes).
_LIMIT_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS}


@dataclass(frozen=True, slots=True)
class PdfContent:
    """A PDF's metadata and its text, one string per page (pages[0] is page 1)."""

    page_count: int
    title: str | None
    author: str | None
    producer: str | None
    pages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PageSize:
    """A page's crop box (what viewers show and pdftoppm -cropbox renders), in points."""

    width: float
    height: float


def parse_pdftotext_html(output: str) -> tuple[dict[str, str], list[str]]:
    """Split `pdftotext -htmlmeta` output into its metadata (unescaped) and its pages (pure).

    Pages are as poppler wrote them, trailing whitespace removed; NUL characters (PostgreSQL text
    cannot hold them) are dropped. A run limited with -l gives only the pages it read.
    """
    head, sep, body = output.partition(_HEAD_END)
    if not sep or not body.endswith(_TAIL):
        raise DocumentError("poppler's output for the PDF was incomplete; export the PDF again and re-upload")
    body = _clean(body.removesuffix(_TAIL))
    meta: dict[str, str] = {}
    if title := _TITLE.search(head):
        meta["Title"] = html.unescape(title.group(1))
    for name, value in _META.findall(head):
        meta.setdefault(name, html.unescape(value))
    pages: list[str] = []
    page = ""
    *ended, rest = body.split(_FORM_FEED)  # str.split: a regex over every character cost 4 ms a 100 pages
    for piece in ended:
        page += piece
        if page == "" or page.endswith("\n\n"):
            pages.append(page.rstrip())
            page = ""
        else:
            page += " "  # a form feed inside a line
    if (page + rest).strip():
        pages.append((page + rest).rstrip())  # only output cut short ends without a form feed
    return meta, pages


def parse_page_sizes(output: str) -> dict[int, PageSize]:
    """Page number -> crop box from `pdfinfo -f N -l M` output (pure)."""
    return {
        int(number): PageSize(float(width), float(height))
        for number, width, height in _PAGE_SIZE.findall(output)
    }


async def read_pdf(
    path: Path,
    *,
    max_pages: int,
    timeout: float,
    scratch_dir: Path | None = None,
    max_text_chars: int = _DEFAULT_MAX_TEXT_CHARS,
    limits: ToolLimits | None = None,
) -> PdfContent:
    """Metadata and per-page text of the PDF at `path`, within `timeout` seconds.

    Raises EncryptedDocumentError for a password-protected PDF, DocumentLimitError past
    `max_pages` or when the text is longer than `max_text_chars` allows, DocumentTimeoutError when
    poppler runs out of time, DocumentError for an empty, damaged or non-PDF file or when poppler
    stops at one of `limits`, ToolMissingError when poppler is not installed. `scratch_dir` is
    poppler's HOME, TMPDIR and working directory; without one pdftotext, which writes nothing (its
    file-size limit is 0), gets a HOME and TMPDIR that do not exist and runs in /: no directory is
    made and removed per document.
    """
    nonempty_size(path)
    # Absolute: the tool runs in another directory.
    argv = ["pdftotext", "-htmlmeta", "-enc", "UTF-8", "-l", str(max_pages + 1), str(path.absolute()), "-"]
    cap = 4 * max_text_chars + _HEAD_BYTES + _PER_PAGE_BYTES * (max_pages + 1)
    try:
        output = await run_poppler(
            argv, timeout=timeout, scratch=scratch_dir, limits=_no_files(limits), max_stdout_bytes=cap
        )
    except ToolOutputLimitError as exc:
        raise _text_limit_error(max_text_chars) from exc
    meta, pages = parse_pdftotext_html(output)
    if not pages:
        raise DocumentError("The PDF has no pages")
    if len(pages) > max_pages:
        raise DocumentLimitError(
            f"The PDF has more than {max_pages} pages; the limit is {max_pages} (WCU_DOC_MAX_PAGES); "
            f"split the document into parts of at most {max_pages} pages and upload each"
        )
    if sum(len(page) for page in pages) > max_text_chars:
        raise _text_limit_error(max_text_chars)

    def text(key: str) -> str | None:
        # Cut, not refused: a title is a label, and every listing serves it.
        value = " ".join(meta.get(key, "").split())[:MAX_METADATA_CHARS].strip()
        return value or None

    return PdfContent(
        page_count=len(pages),
        title=text("Title"),
        author=text("Author"),
        producer=text("Producer"),
        pages=tuple(pages),
    )


def parse_image_pages(output: str) -> set[int]:
    """The pages that show at least one image, from `pdfimages -list` output (pure)."""
    return {int(page) for page in _IMAGE_ROW.findall(output)}


async def pages_with_images(
    path: Path, first: int, last: int, *, timeout: float, scratch: Path, limits: ToolLimits | None
) -> set[int] | None:
    """The pages of first..last that show an image (pdfimages lists them without decoding any).

    None when the listing is too long to read (tens of thousands of images): any page may have one.
    """
    argv = ["pdfimages", "-list", "-f", str(first), "-l", str(last), str(path.absolute())]
    try:
        output = await run_poppler(
            argv,
            timeout=timeout,
            scratch=scratch,
            limits=_no_files(limits),
            max_stdout_bytes=_IMAGE_LIST_BYTES,
        )
    except ToolOutputLimitError:
        return None
    return parse_image_pages(output)


async def page_sizes(
    path: Path, first: int, last: int, *, timeout: float, scratch: Path, limits: ToolLimits | None
) -> dict[int, PageSize]:
    """The crop box of pages first..last (pdfinfo prints two short lines per page)."""
    argv = ["pdfinfo", "-f", str(first), "-l", str(last), str(path.absolute())]
    try:
        output = await run_poppler(
            argv,
            timeout=timeout,
            scratch=scratch,
            limits=_no_files(limits),
            max_stdout_bytes=_HEAD_BYTES + 256 * (last - first + 1),
        )
    except ToolOutputLimitError as exc:
        # Only metadata strings of tens of kilobytes make pdfinfo say this much.
        raise DocumentError(
            "The PDF's metadata is too long to read; export the PDF again and re-upload"
        ) from exc
    return parse_page_sizes(output)


async def render_page(
    path: Path,
    page: int,
    *,
    dpi: int,
    size: PageSize,
    out: Path,
    timeout: float,
    scratch: Path,
    limits: ToolLimits | None,
) -> Path:
    """Page `page` as an 8-bit grayscale PGM image at `dpi`, written to `out` (.pgm is appended).

    The file may be no larger than the image the page's size and `dpi` make: pdftoppm is stopped
    by the kernel (RLIMIT_FSIZE) before it writes more.
    """
    pixels = (int(size.width * dpi / 72) + 2) * (int(size.height * dpi / 72) + 2)
    argv = ["pdftoppm", "-r", str(dpi), "-gray", "-cropbox", "-f", str(page), "-l", str(page)]
    argv += ["-singlefile", str(path.absolute()), str(out.absolute())]
    image_limits = dataclasses.replace(limits or ToolLimits(), file_bytes=pixels + 4096)
    await run_poppler(argv, timeout=timeout, scratch=scratch, limits=image_limits, max_stdout_bytes=4096)
    return out.with_name(out.name + ".pgm")


async def run_poppler(
    argv: list[str],
    *,
    timeout: float,
    scratch: Path | None,
    limits: ToolLimits | None,
    max_stdout_bytes: int | None = None,
) -> str:
    """Run a poppler tool in `scratch` (None: one that writes nothing, in /, with no usable HOME);
    its failures become DocumentErrors that say what to do."""
    home = scratch or _NO_HOME
    try:
        result = await run_tool(
            argv,
            timeout=timeout,
            cwd=scratch or Path("/"),
            env=tool_env(home, home),
            limits=limits,
            max_stdout_bytes=max_stdout_bytes,
        )
    except (ToolMissingError, ToolOutputLimitError):
        raise
    except ToolTimeoutError as exc:
        raise DocumentTimeoutError(
            f"Reading the PDF took longer than the time allowed ({exc.timeout:.0f} s, "
            "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
        ) from exc
    except ToolError as exc:
        raise _document_error(exc, limited=limits is not None) from exc
    return result.stdout_text


def _text_limit_error(max_text_chars: int) -> DocumentLimitError:
    return DocumentLimitError(
        f"The PDF's text is longer than {max_text_chars:,} characters, the limit "
        "(WCU_DOC_MAX_TEXT_CHARS); split the document"
    )


def _no_files(limits: ToolLimits | None) -> ToolLimits | None:
    # pdftotext and pdfinfo write only to their stdout pipe: any file they open for writing is a fault.
    return None if limits is None else dataclasses.replace(limits, file_bytes=0)


# Bidi controls: pdftotext wraps right-to-left runs in U+202B ... U+202C, and the closing mark
# sticks to the run's last word, which is then indexed (and searched for) with the mark in it.
# They only say how to draw the text; the characters are already in reading order. Where one
# stands between two word characters it is a run boundary ("end\u202c" then an Arabic word): a
# space keeps the two words apart.
_BIDI = "\u200e\u200f\u202a-\u202e\u2066-\u2069"
_BIDI_BETWEEN_WORDS = re.compile(f"(?<=\\w)[{_BIDI}]+(?=\\w)")
_BIDI_CONTROLS = re.compile(f"[{_BIDI}]+")
_BIDI_CHARS = tuple(chr(c) for c in (0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def _clean(text: str) -> str:
    # PostgreSQL text cannot hold NUL; poppler passes through whatever the PDF maps glyphs to.
    text = text.replace("\x00", "")
    # The common case: no bidi control at all. `in` runs in C and answers at once for text whose
    # characters are all below U+0100; the regex's search took 1.5 ms on a 100-page document.
    if text.isascii() or not any(control in text for control in _BIDI_CHARS):
        return text
    return _BIDI_CONTROLS.sub("", _BIDI_BETWEEN_WORDS.sub(" ", text))


def nonempty_size(path: Path) -> int:
    """The file's size; DocumentError when it cannot be read or is empty."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DocumentError(f"The document could not be read: {exc.strerror}") from exc
    if size == 0:
        raise DocumentError("The file is empty (0 bytes); upload the document again")
    return size


def _document_error(exc: ToolError, *, limited: bool) -> DocumentError:
    tail = exc.stderr_tail
    if "Incorrect password" in tail:
        return EncryptedDocumentError()
    if "can not be after the last page (0)" in tail:
        return DocumentError("The PDF has no pages")
    if exc.returncode == 3 or "not allowed" in tail:
        return DocumentError("The PDF's permissions forbid extracting its text; save it without restrictions")
    signum = -exc.returncode if exc.returncode is not None and exc.returncode < 0 else None
    if limited and signum in (signal.SIGXCPU, signal.SIGKILL):
        # RLIMIT_CPU's soft and hard limit are one: the kernel's SIGXCPU comes with SIGKILL.
        return DocumentLimitError(
            f"poppler was stopped on this PDF (signal {signum}): it used up its CPU time "
            "(WCU_POPPLER_MAX_CPU_SECONDS) or the system ran out of memory; simplify the document"
        )
    if limited and signum in _LIMIT_SIGNALS:
        # An allocation past RLIMIT_AS aborts or crashes poppler: the signal cannot tell it from a bug.
        return DocumentLimitError(
            f"poppler stopped on this PDF (signal {signum}): it ran out of the memory allowed "
            "(WCU_POPPLER_MAX_MEMORY_BYTES) or crashed; simplify the document"
        )
    if limited and _OUT_OF_MEMORY.search(tail):
        return DocumentLimitError(
            "poppler ran out of the memory allowed on this PDF (WCU_POPPLER_MAX_MEMORY_BYTES); "
            "simplify the document"
        )
    reason = tail.splitlines()[-1] if tail else f"exit code {exc.returncode}"
    reason = reason.removeprefix("Syntax Error: ").removeprefix("I/O Error: ").strip()
    if exc.returncode is not None and exc.returncode < 0:
        reason = f"poppler crashed on it (signal {-exc.returncode})"
    return DocumentError(
        f"The PDF is damaged, truncated or not a PDF ({reason}); export it again and re-upload"
    )
