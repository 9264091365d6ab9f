"""DOCX to PDF with headless LibreOffice, one private user profile per worker slot.

Measured on LibreOffice 7.4 (see bench/README.md):
- Two conversions sharing one profile fail, so each worker slot owns a profile and its
  conversions are serialised by a lock.
- soffice exits 0 when it could not load the input, so the output is checked: it must exist
  and start with `%PDF-`.
- Without an import filter, soffice opens garbage named .docx as plain text and "converts" it;
  `--infilter` pins the Word 2007+ (DOCX) filter so anything else fails to load.
- A second soffice handed to a running instance of the same profile is converted by it, but
  the running instance then quits, so keeping LibreOffice warm needs a UNO client; this first
  version runs a cold soffice per conversion with a persistent per-slot profile.

The profile lives under `<base_dir>/office-slot-<n>/` (mode 0700, so it is writable by the
runner's user whatever HOME is); HOME and TMPDIR of soffice point inside it too. A conversion
that times out has its whole process group killed and its profile rebuilt, since a killed
soffice can leave a lock file or half-written settings behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from wcu_ai.documents.process import ToolResult, run_tool, tool_env
from wcu_ai.errors import DocumentError, DocumentTimeoutError, ToolError, ToolTimeoutError

logger = logging.getLogger(__name__)

_DOCX_IMPORT_FILTER = "MS Word 2007 XML"
_PDF_EXPORT = "pdf:writer_pdf_Export"
# soffice asks to be restarted (exit 81) when it has just created or migrated a profile.
_EXIT_RESTART_REQUESTED = 81
_PDF_MAGIC = b"%PDF-"


class OfficeConverter:
    """Converts DOCX files to PDF with LibreOffice; owns the profile of one worker slot."""

    def __init__(self, slot: int, base_dir: Path) -> None:
        if slot < 0:
            raise ValueError("slot must be >= 0")
        self.slot = slot
        self.slot_dir = base_dir / f"office-slot-{slot}"
        self.profile_dir = self.slot_dir / "profile"
        self.home_dir = self.slot_dir / "home"
        self._lock = asyncio.Lock()
        self._closed = False
        # A profile left by a runner that was killed may hold a stale lock: start afresh.
        shutil.rmtree(self.slot_dir, ignore_errors=True)
        base_dir.mkdir(parents=True, exist_ok=True)
        self.slot_dir.mkdir(mode=0o700)
        self.home_dir.mkdir(mode=0o700)

    @property
    def profile_url(self) -> str:
        return self.profile_dir.resolve().as_uri()

    async def convert_to_pdf(self, src: Path, out_dir: Path, *, timeout: float) -> Path:
        """Convert the DOCX at `src` into `out_dir`/<stem>.pdf and return that path.

        Raises DocumentError when LibreOffice cannot load the file or writes no PDF,
        DocumentTimeoutError after killing soffice's process group when `timeout` runs out,
        ToolMissingError when soffice is not on PATH, ToolError when soffice itself fails.
        """
        if self._closed:
            raise RuntimeError("the OfficeConverter is closed")
        src = src.resolve()
        out_dir = out_dir.resolve()
        target = out_dir / f"{src.stem}.pdf"
        async with self._lock:
            target.unlink(missing_ok=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            for attempt in (1, 2):
                try:
                    result = await self._run_soffice(src, out_dir, timeout=deadline - loop.time())
                except ToolTimeoutError as exc:
                    self._reset_profile()
                    raise DocumentTimeoutError(
                        f"Converting the DOCX took longer than the time allowed ({exc.timeout:.0f} s, "
                        "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
                    ) from exc
                except ToolError as exc:
                    if exc.returncode == _EXIT_RESTART_REQUESTED and attempt == 1:
                        continue
                    raise
                break
            else:  # pragma: no cover - the loop always breaks or raises
                raise AssertionError("unreachable")
        if not _is_pdf(target):
            said = _soffice_error(result.stderr_text + result.stdout_text)
            raise DocumentError(
                "LibreOffice could not read the document as DOCX"
                + (f" ({said})" if said else "")
                + "; open it in Word or LibreOffice, save it as .docx again and re-upload"
            )
        logger.info(
            "converted to pdf",
            extra={"action": "office_convert", "slot": self.slot, "seconds": result.elapsed_seconds},
        )
        return target

    async def _run_soffice(self, src: Path, out_dir: Path, *, timeout: float) -> ToolResult:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.slot_dir, prefix="tmp-") as tmp:
            argv = [
                "soffice",
                f"-env:UserInstallation={self.profile_url}",
                "--headless",
                "--invisible",
                "--norestore",
                "--nologo",
                "--nodefault",
                "--nolockcheck",
                f"--infilter={_DOCX_IMPORT_FILTER}",
                "--convert-to",
                _PDF_EXPORT,
                "--outdir",
                str(out_dir),
                str(src),
            ]
            return await run_tool(
                argv, timeout=timeout, cwd=Path(tmp), env=tool_env(self.home_dir, Path(tmp))
            )

    def _reset_profile(self) -> None:
        shutil.rmtree(self.profile_dir, ignore_errors=True)

    def close(self) -> None:
        """Remove the slot's profile and scratch space; the converter cannot be used after."""
        self._closed = True
        shutil.rmtree(self.slot_dir, ignore_errors=True)

    def __enter__(self) -> OfficeConverter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _is_pdf(path: Path) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        return fh.read(len(_PDF_MAGIC)) == _PDF_MAGIC
    return False


def _soffice_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    return ""
