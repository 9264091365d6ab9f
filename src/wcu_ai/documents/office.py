"""DOCX to PDF with headless LibreOffice, one private user profile per worker slot.

Measured on LibreOffice 7.4 (bench/README.md has the numbers):
- Two conversions sharing one profile fail, so each worker slot owns a profile and its
  conversions are serialised by a lock.
- soffice exits 0 when it could not load the input, so the output is checked: it must exist
  and start with `%PDF-`.
- Without an import filter, soffice opens garbage named .docx as plain text and "converts" it;
  `--infilter` pins the Word 2007+ (DOCX) filter so anything else fails to load.
- Warm mode (the default): a `soffice` started with the slot's profile keeps running, and each
  conversion's `soffice --convert-to` hands its request to it over LibreOffice's own
  single-instance pipe and waits for it to finish, which skips the start-up (about 0.8 s).
  The running instance needs a document open, or it quits after the first request it serves;
  it holds a one-line flat ODF document (a .txt would open a filter dialog, fail, and quit).
  The pipe it listens on is /tmp/OSL_PIPE_<uid>_SingleOfficeIPC_<md5 of the profile URL>;
  conversions wait for it to exist, so none can race the instance for the profile. If the
  instance cannot be started (no pipe within `start_timeout`, twice) the converter goes on
  cold: one soffice per conversion, same profile, same checks.

The profile lives under `<base_dir>/office-slot-<n>/` (mode 0700, so it is writable by the
runner's user whatever HOME is); HOME and TMPDIR of soffice point inside it too. A conversion
that times out has the whole process group of the conversion and of the warm instance killed,
and the profile rebuilt, since a killed soffice can leave a lock or half-written settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from wcu_ai.documents.process import ToolResult, kill_group, run_tool, tool_env
from wcu_ai.errors import (
    DocumentError,
    DocumentTimeoutError,
    ToolError,
    ToolMissingError,
    ToolTimeoutError,
)

logger = logging.getLogger(__name__)

_DOCX_IMPORT_FILTER = "MS Word 2007 XML"
_PDF_EXPORT = "pdf:writer_pdf_Export"
# soffice asks to be restarted (exit 81) when it has just created or migrated a profile.
_EXIT_RESTART_REQUESTED = 81
_PDF_MAGIC = b"%PDF-"
_PIPE_DIRS = (Path("/tmp"), Path("/var/tmp"))  # noqa: S108 - where LibreOffice's osl puts pipes
_KEEPALIVE = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
    ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2"'
    ' office:mimetype="application/vnd.oasis.opendocument.text">'
    "<office:body><office:text><text:p>wcu-ai keeps this LibreOffice warm</text:p>"
    "</office:text></office:body></office:document>\n"
)
_SERVER_FAILURES_BEFORE_COLD = 2
_COMMON_FLAGS = ["--headless", "--invisible", "--norestore", "--nologo", "--nolockcheck"]


class OfficeConverter:
    """Converts DOCX files to PDF with LibreOffice; owns the profile of one worker slot.

    `warm=False` runs a cold soffice per conversion. `recycle_after` conversions, the warm
    instance is restarted, so memory it may leak stays bounded.
    """

    def __init__(
        self,
        slot: int,
        base_dir: Path,
        *,
        warm: bool = True,
        recycle_after: int = 200,
        start_timeout: float = 20.0,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        if slot < 0:
            raise ValueError("slot must be >= 0")
        self.slot = slot
        self.slot_dir = (base_dir / f"office-slot-{slot}").absolute()
        self.profile_dir = self.slot_dir / "profile"
        self.home_dir = self.slot_dir / "home"
        self.warm = warm
        self.recycle_after = recycle_after
        self.start_timeout = start_timeout
        # Told each time a warm instance is stopped to be started afresh, with the reason (metrics).
        self.on_restart = on_restart
        self._lock = asyncio.Lock()
        self._closed = False
        self._server: subprocess.Popen[bytes] | None = None
        self._server_conversions = 0
        self._server_failures = 0
        # A runner that was killed may have left its soffice running on this profile, and a
        # stale lock in it: stop the one, start afresh without the other.
        _kill_processes_using(self.profile_url)
        shutil.rmtree(self.slot_dir, ignore_errors=True)
        self._remove_pipe()
        base_dir.mkdir(parents=True, exist_ok=True)
        self.slot_dir.mkdir(mode=0o700)
        self.home_dir.mkdir(mode=0o700)

    @property
    def profile_url(self) -> str:
        return self.profile_dir.as_uri()

    @property
    def pipe_name(self) -> str:
        """LibreOffice's single-instance pipe for this profile (desktop/.../officeipcthread.cxx)."""
        digest = hashlib.md5(self.profile_url.encode("utf-16-le"), usedforsecurity=False).digest()
        return f"OSL_PIPE_{os.getuid()}_SingleOfficeIPC_" + "".join(f"{byte:x}" for byte in digest)

    @property
    def is_warm(self) -> bool:
        """Whether a warm instance is running for this slot now."""
        return self._server is not None and self._server.poll() is None

    async def convert_to_pdf(self, src: Path, out_dir: Path, *, timeout: float) -> Path:
        """Convert the DOCX at `src` into `out_dir`/<stem>.pdf and return that path.

        `out_dir` receives nothing else, even when soffice is killed. Raises DocumentError
        when LibreOffice cannot load the file or writes no PDF,
        DocumentTimeoutError after killing soffice when `timeout` runs out, ToolMissingError
        when soffice is not on PATH, ToolError when soffice itself fails.
        """
        if self._closed:
            raise RuntimeError("the OfficeConverter is closed")
        src = src.resolve()
        out_dir = out_dir.resolve()
        target = out_dir / f"{src.stem}.pdf"
        async with self._lock:
            deadline = time.monotonic() + timeout
            for attempt in (1, 2):
                target.unlink(missing_ok=True)
                try:
                    if self.warm:
                        await self._ensure_server(deadline)
                    server = self._server
                    log_offset = self._server_log_size()
                    result = await self._convert(src, target, deadline)
                except ToolTimeoutError as exc:
                    self._restarting("timeout")
                    self._stop_server()
                    self._remove_pipe()
                    shutil.rmtree(self.profile_dir, ignore_errors=True)
                    target.unlink(missing_ok=True)  # the killed instance may have begun writing it
                    raise _timeout_error(exc.timeout) from exc
                except BaseException:
                    # Cancelled, or soffice failed: the warm instance may still be busy with this one.
                    self._restarting("error")
                    self._stop_server()
                    self._remove_pipe()
                    target.unlink(missing_ok=True)
                    raise
                said = _soffice_error(
                    result.stderr_text + result.stdout_text + self._server_log_since(log_offset)
                )
                died = self._after_conversion()
                # A warm instance that died under this conversion says nothing about the
                # document (it may have been killed for memory): try once more with a new one.
                if _is_pdf(target) or server is None or not died or attempt == 2:
                    break
                logger.warning(
                    "warm LibreOffice died during a conversion; retrying once",
                    extra={"action": "office_server_died", "slot": self.slot},
                )
        if not _is_pdf(target):
            target.unlink(missing_ok=True)
            raise DocumentError(
                "LibreOffice could not read the document as DOCX"
                + (f" ({said})" if said else "")
                + "; open it in Word or LibreOffice, save it as .docx again and re-upload"
            )
        logger.info(
            "converted to pdf",
            extra={
                "action": "office_convert",
                "slot": self.slot,
                "warm": self.is_warm,
                "seconds": round(result.elapsed_seconds, 3),
            },
        )
        return target

    async def _convert(self, src: Path, target: Path, deadline: float) -> ToolResult:
        """Run one conversion; the PDF, if any, is moved to `target`.

        soffice writes into a private directory, so whatever a killed soffice leaves there
        (its lock file, a partial PDF, temp files) goes with that directory.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            with tempfile.TemporaryDirectory(dir=self.slot_dir, prefix="tmp-") as tmp_name:
                tmp = Path(tmp_name)
                written = tmp / "out" / f"{src.stem}.pdf"
                argv = [
                    "soffice",
                    f"-env:UserInstallation={self.profile_url}",
                    *_COMMON_FLAGS,
                    "--nodefault",
                    f"--infilter={_DOCX_IMPORT_FILTER}",
                    "--convert-to",
                    _PDF_EXPORT,
                    "--outdir",
                    str(written.parent),
                    str(src),
                ]
                env = tool_env(self.home_dir, tmp)
                try:
                    result = await run_tool(argv, timeout=deadline - time.monotonic(), cwd=tmp, env=env)
                except ToolTimeoutError:
                    raise
                except ToolError as exc:
                    if exc.returncode != _EXIT_RESTART_REQUESTED or attempt == 2:
                        raise
                    continue
                if written.is_file():
                    shutil.move(written, target)
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the warm instance ------------------------------------------------------------------

    async def _ensure_server(self, deadline: float) -> None:
        if self.is_warm or self._server_failures >= _SERVER_FAILURES_BEFORE_COLD:
            return
        if self._server is not None:
            self._restarting("exited")
            logger.warning(
                "warm LibreOffice exited; restarting it",
                extra={"action": "office_server_exited", "slot": self.slot, "code": self._server.returncode},
            )
            self._stop_server()
            self._remove_pipe()
            shutil.rmtree(self.profile_dir, ignore_errors=True)
        executable = shutil.which("soffice")
        if executable is None:
            raise ToolMissingError("soffice is not on PATH: install it (see README, runner image)")
        if not self.profile_dir.exists():
            await self._create_profile(deadline)
        keepalive_dir = self.slot_dir / "keepalive"
        server_tmp = self.slot_dir / "server-tmp"
        for folder in (keepalive_dir, server_tmp):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700)
        keepalive = keepalive_dir / "keepalive.fodt"
        keepalive.write_text(_KEEPALIVE, encoding="utf-8")
        argv = [executable, f"-env:UserInstallation={self.profile_url}", *_COMMON_FLAGS, str(keepalive)]
        with (self.slot_dir / "server.log").open("wb") as log:
            self._server = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.slot_dir,
                env=tool_env(self.home_dir, server_tmp),
                start_new_session=True,
            )
        self._server_conversions = 0
        started = time.monotonic()
        give_up = started + self.start_timeout
        while not self._pipe_exists():
            now = time.monotonic()
            if self._server.poll() is not None or now >= give_up:
                self._server_failures += 1
                logger.warning(
                    "warm LibreOffice did not start; converting cold",
                    extra={
                        "action": "office_server_failed",
                        "slot": self.slot,
                        "code": self._server.returncode,
                        "log": self._server_log_since(0)[-500:],
                    },
                )
                self._stop_server()
                self._remove_pipe()
                return
            if now >= deadline:
                self._stop_server()
                self._remove_pipe()
                raise _timeout_error(deadline - started)
            await asyncio.sleep(0.01)
        self._server_failures = 0
        logger.info(
            "warm LibreOffice started",
            extra={
                "action": "office_server_started",
                "slot": self.slot,
                "seconds": round(time.monotonic() - started, 3),
            },
        )

    async def _create_profile(self, deadline: float) -> None:
        # On a new profile soffice restarts itself once, and the restarted instance forgets the
        # document it was asked to hold open, so it would quit after one conversion: create the
        # profile first with a soffice that stops as soon as it has started.
        with tempfile.TemporaryDirectory(dir=self.slot_dir, prefix="tmp-") as tmp:
            argv = [
                "soffice",
                f"-env:UserInstallation={self.profile_url}",
                *_COMMON_FLAGS,
                "--terminate_after_init",
            ]
            try:
                await run_tool(
                    argv,
                    timeout=deadline - time.monotonic(),
                    cwd=Path(tmp),
                    env=tool_env(self.home_dir, Path(tmp)),
                )
            except ToolTimeoutError as exc:
                self._remove_pipe()
                shutil.rmtree(self.profile_dir, ignore_errors=True)
                raise _timeout_error(exc.timeout) from exc
            except ToolError as exc:
                if exc.returncode != _EXIT_RESTART_REQUESTED:
                    raise

    def _after_conversion(self) -> bool:
        """Count a conversion on the warm instance; True when that instance has died."""
        if self._server is None:
            return False
        self._server_conversions += 1
        died = self._server.poll() is not None
        if died or self._server_conversions >= self.recycle_after:
            self._restarting("died" if died else "recycled")
            self._stop_server()
            self._remove_pipe()
        if died:
            shutil.rmtree(self.profile_dir, ignore_errors=True)  # it may have left a lock there
        return died

    def _restarting(self, reason: str) -> None:
        if self._server is not None and self.on_restart is not None:
            self.on_restart(reason)

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        kill_group(server.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=5)
        for folder in ("keepalive", "server-tmp"):
            shutil.rmtree(self.slot_dir / folder, ignore_errors=True)
        (self.slot_dir / "server.log").unlink(missing_ok=True)

    def _pipe_exists(self) -> bool:
        return any((folder / self.pipe_name).exists() for folder in _PIPE_DIRS)

    def _remove_pipe(self) -> None:
        # A killed soffice leaves its socket file behind; nothing of ours listens on it now.
        for folder in _PIPE_DIRS:
            with contextlib.suppress(OSError):
                (folder / self.pipe_name).unlink(missing_ok=True)

    def _server_log_size(self) -> int:
        try:
            return (self.slot_dir / "server.log").stat().st_size
        except OSError:
            return 0

    def _server_log_since(self, offset: int) -> str:
        try:
            with (self.slot_dir / "server.log").open("rb") as fh:
                fh.seek(offset)
                return fh.read(64 * 1024).decode("utf-8", errors="replace")
        except OSError:
            return ""

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the warm instance and remove the slot's profile; the converter cannot be used after."""
        self._closed = True
        self._stop_server()
        self._remove_pipe()
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


def _timeout_error(seconds: float) -> DocumentTimeoutError:
    return DocumentTimeoutError(
        f"Converting the DOCX took longer than the time allowed ({seconds:.0f} s, "
        "WCU_DOC_TIMEOUT_SECONDS); split the document or simplify it"
    )


def _is_pdf(path: Path) -> bool:
    with contextlib.suppress(OSError), path.open("rb") as fh:
        return fh.read(len(_PDF_MAGIC)) == _PDF_MAGIC
    return False


def _soffice_error(output: str) -> str:
    for line in output.splitlines():
        if line.startswith("Error:"):
            return line.removeprefix("Error:").strip()
    return ""


def _kill_processes_using(profile_url: str) -> None:
    """Kill the process groups of soffice processes left running on this profile (Linux /proc)."""
    marker = f"-env:UserInstallation={profile_url}".encode()
    proc = Path("/proc")
    if not proc.is_dir():
        return
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if marker in args:
                with contextlib.suppress(ProcessLookupError):
                    group = os.getpgid(int(entry.name))
                    if group != os.getpgrp():  # never our own group
                        kill_group(group)
