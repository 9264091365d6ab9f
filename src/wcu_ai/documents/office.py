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

What a document can make LibreOffice reach is closed at three levels (the first, rewriting the
package so that it points at nothing outside itself, is ooxml.py's):
- The profile: every new one gets `_PROFILE_SETTINGS` (no linked images or other resources
  loaded for a document, links never updated, no macros, and a proxy that leads nowhere for
  every protocol), before any document is opened with it.
- Kernel limits: every soffice (the warm instance, each conversion, the profile creation) runs
  under `limits` (address space, CPU seconds, file size, descriptors; see process.ToolLimits).
  The CPU limit is the whole budget of a warm instance, so it is recycled once it has used half:
  a conversion never starts on an instance near its end, and an instance left behind by a killed
  runner dies of it.
- A private network namespace (`unshare --user --net`, only a loopback that is down) where the
  kernel allows one: see probe_private_network. The single-instance pipe is a file-system socket,
  which works across network namespaces.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from wcu_ai.documents.process import ToolLimits, ToolResult, kill_group, limited_argv, run_tool, tool_env
from wcu_ai.errors import (
    DocumentError,
    DocumentTimeoutError,
    ToolError,
    ToolMissingError,
    ToolTimeoutError,
)
from wcu_ai.settings import Settings

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

#: Where the profile sends every proxied request: a loopback port that only a privileged process
#: could listen on, so a connection is refused at once.
DEAD_PROXY = ("127.0.0.1", 1)
# The settings of every new profile, as (node path, property, value) of user/registrymodifications.xcu.
# Each name is declared in LibreOffice 7.4's officecfg schema (share/registry/main.xcd, checked by
# tests/documents/test_office.py); the values' meaning is from the schema sources named.
_PROFILE_SETTINGS: tuple[tuple[str, str, str], ...] = (
    # officecfg/.../Inet.xcs: ooInetProxyType 2 is "manual proxy configuration" (0 none, 1 the
    # system's, which reads http_proxy from the environment). Every protocol goes to the dead
    # proxy (the proxy decider sends all but https and ftp to the HTTP one), and with an empty
    # no-proxy list no host bypasses it, loopback included.
    ("/org.openoffice.Inet/Settings", "ooInetProxyType", "2"),
    ("/org.openoffice.Inet/Settings", "ooInetNoProxy", ""),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyName", DEAD_PROXY[0]),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPProxyPort", str(DEAD_PROXY[1])),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyName", DEAD_PROXY[0]),
    ("/org.openoffice.Inet/Settings", "ooInetHTTPSProxyPort", str(DEAD_PROXY[1])),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyName", DEAD_PROXY[0]),
    ("/org.openoffice.Inet/Settings", "ooInetFTPProxyPort", str(DEAD_PROXY[1])),
    # officecfg/.../Office/Common.xcs, Security/Scripting: BlockUntrustedRefererLinks refuses to
    # load a linked image (or other linked resource) for a document outside a trusted location,
    # and SecureURL, the list of trusted locations, is empty. Measured on 7.4: this alone stops a
    # linked picture over http:// and over file://.
    ("/org.openoffice.Office.Common/Security/Scripting", "BlockUntrustedRefererLinks", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "SecureURL", ""),
    # No macro runs whatever the document holds; MacroSecurityLevel 3 is "very high" (only signed
    # macros from trusted locations, of which there are none).
    ("/org.openoffice.Office.Common/Security/Scripting", "DisableMacrosExecution", "true"),
    ("/org.openoffice.Office.Common/Security/Scripting", "MacroSecurityLevel", "3"),
    # Office/Writer.xcs Content/Update/Link, com.sun.star.document.LinkUpdateModes: 0 is NEVER
    # (1 on request, 2 always): linked sections, DDE and OLE links are not updated on load.
    ("/org.openoffice.Office.Writer/Content/Update", "Link", "0"),
    # Office/Calc.xcs Content/Update/Link has Calc's own values (sc ScLkUpdMode: 0 always,
    # 1 never, 2 on demand), for spreadsheets embedded in a document.
    ("/org.openoffice.Office.Calc/Content/Update", "Link", "1"),
)
_XCU_ITEMS_OPEN = (
    '<oor:items xmlns:oor="http://openoffice.org/2001/registry" xmlns:xs="http://www.w3.org/2001/XMLSchema"'
    ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
)
_START_CPU_SECONDS = 30  # what starting and warming an instance may use on top of the budget
_OPEN_FILES = 1024  # a conversion holds about 20 descriptors (measured on 7.4)
_FILE_MARGIN_BYTES = 16 * 1024 * 1024

PrivateNetwork = Literal["auto", "required", "off"]


def office_limits(*, memory_bytes: int, timeout_seconds: float, max_pdf_bytes: int) -> ToolLimits:
    """The kernel limits of every soffice of a converter.

    A warm instance's CPU budget is two document time limits: it is recycled after using one, so
    each conversion can use a whole document limit of CPU. The file-size limit lets the PDF grow
    a little past WCU_DOC_MAX_PDF_BYTES, so the size check names that limit.
    """
    return ToolLimits(
        memory_bytes=memory_bytes,
        cpu_seconds=math.ceil(2 * timeout_seconds) + _START_CPU_SECONDS,
        file_bytes=max_pdf_bytes + _FILE_MARGIN_BYTES,
        open_files=_OPEN_FILES,
    )


@dataclass(frozen=True, slots=True)
class PrivateNetworkProbe:
    """Whether soffice can run in a network namespace of its own, and why not."""

    available: bool
    argv: tuple[str, ...]
    reason: str


@functools.cache
def probe_private_network() -> PrivateNetworkProbe:
    """Try `unshare --user --net` once per process: containers often forbid user namespaces.

    --map-current-user keeps the uid, which names LibreOffice's single-instance pipe.
    """
    unshare = shutil.which("unshare")
    if unshare is None:
        return PrivateNetworkProbe(False, (), "unshare (util-linux) is not on PATH")
    argv = (unshare, "--user", "--map-current-user", "--net", "--")
    try:
        probe = subprocess.run([*argv, "true"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return PrivateNetworkProbe(False, (), f"unshare could not run: {exc}")
    if probe.returncode != 0:
        said = probe.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return PrivateNetworkProbe(False, (), said[-1] if said else f"unshare exited with {probe.returncode}")
    return PrivateNetworkProbe(True, argv, "")


class OfficeConverter:
    """Converts DOCX files to PDF with LibreOffice; owns the profile of one worker slot.

    `warm=False` runs a cold soffice per conversion. After `recycle_after` conversions, or once
    it has used `recycle_cpu_seconds` of CPU (default: half of `limits.cpu_seconds`), the warm
    instance is restarted, so memory it may leak stays bounded and its CPU limit is never what
    ends a conversion of an ordinary document.
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
        limits: ToolLimits | None = None,
        private_network: PrivateNetwork = "auto",
        recycle_cpu_seconds: float | None = None,
    ) -> None:
        if slot < 0:
            raise ValueError("slot must be >= 0")
        self.slot = slot
        self.limits = limits if limits is not None else _default_limits()
        self.private_network = private_network
        cpu = self.limits.cpu_seconds
        self.recycle_cpu_seconds = (
            recycle_cpu_seconds if recycle_cpu_seconds is not None else (cpu and cpu / 2)
        )
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
        return _pipe_name(self.profile_url)

    @property
    def is_warm(self) -> bool:
        """Whether a warm instance is running for this slot now."""
        return self._server is not None and self._server.poll() is None

    def _isolation(self) -> list[str]:
        """The argv prefix that runs soffice in a network namespace of its own, if any."""
        if self.private_network == "off":
            return []
        probe = probe_private_network()
        if probe.available:
            return list(probe.argv)
        if self.private_network == "required":
            raise ToolMissingError(
                f"WCU_OFFICE_PRIVATE_NETWORK=required, but soffice cannot get a network namespace "
                f"of its own here ({probe.reason}); allow user namespaces or set it to auto"
            )
        return []

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
            died = False
            for attempt in (1, 2):
                target.unlink(missing_ok=True)
                try:
                    if not self.profile_dir.exists():
                        await self._create_profile(deadline)
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
            if died:
                raise DocumentError(
                    "LibreOffice stopped while converting the document, twice: it crashed or "
                    "reached one of its limits (memory: WCU_OFFICE_MEMORY_BYTES; the PDF's size: "
                    "WCU_DOC_MAX_PDF_BYTES; CPU time: WCU_DOC_TIMEOUT_SECONDS); simplify or split "
                    "the document"
                )
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
                    *self._isolation(),
                    _soffice(),
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
                    result = await _run_soffice(
                        argv, timeout=deadline - time.monotonic(), cwd=tmp, env=env, limits=self.limits
                    )
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
        executable = _soffice()
        if not self.profile_dir.exists():
            await self._create_profile(deadline)
        keepalive_dir = self.slot_dir / "keepalive"
        server_tmp = self.slot_dir / "server-tmp"
        for folder in (keepalive_dir, server_tmp):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(mode=0o700)
        keepalive = keepalive_dir / "keepalive.fodt"
        keepalive.write_text(_KEEPALIVE, encoding="utf-8")
        argv = limited_argv(
            [
                *self._isolation(),
                executable,
                f"-env:UserInstallation={self.profile_url}",
                *_COMMON_FLAGS,
                str(keepalive),
            ],
            self.limits,
        )
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
        """A new profile holding _PROFILE_SETTINGS before any soffice has run on it.

        LibreOffice fills in the rest of a profile it finds with only its settings in it, and
        keeps those settings. The warm instance needs more: on a new profile soffice restarts
        itself once, and the restarted instance forgets the document it was asked to hold open,
        so it would quit after one conversion; for it the profile is first completed by a
        soffice that stops as soon as it has started.
        """
        try:
            self.profile_dir.mkdir(mode=0o700)
            write_profile_settings(self.profile_dir)
        except OSError:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            raise
        if not self.warm:
            return
        with tempfile.TemporaryDirectory(dir=self.slot_dir, prefix="tmp-") as tmp:
            argv = [
                *self._isolation(),
                _soffice(),
                f"-env:UserInstallation={self.profile_url}",
                *_COMMON_FLAGS,
                "--terminate_after_init",
            ]
            try:
                await _run_soffice(
                    argv,
                    timeout=deadline - time.monotonic(),
                    cwd=Path(tmp),
                    env=tool_env(self.home_dir, Path(tmp)),
                    limits=self.limits,
                )
            except ToolTimeoutError as exc:
                self._remove_pipe()
                shutil.rmtree(self.profile_dir, ignore_errors=True)
                raise _timeout_error(exc.timeout) from exc
            except ToolError as exc:
                if exc.returncode != _EXIT_RESTART_REQUESTED:
                    shutil.rmtree(self.profile_dir, ignore_errors=True)
                    raise
            except BaseException:
                shutil.rmtree(self.profile_dir, ignore_errors=True)
                raise

    def _after_conversion(self) -> bool:
        """Count a conversion on the warm instance; True when that instance has died."""
        if self._server is None:
            return False
        self._server_conversions += 1
        died = self._server.poll() is not None
        threshold = self.recycle_cpu_seconds
        spent = bool(threshold) and not died and _group_cpu_seconds(self._server.pid) >= threshold
        if died or spent or self._server_conversions >= self.recycle_after:
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


async def _run_soffice(argv: list[str], **kwargs: Any) -> ToolResult:
    """run_tool for a soffice command line that may start with the namespace prefix.

    unshare execs soffice in its own process, so the exit status is soffice's; only the
    message would name unshare, which is what run_tool sees as the tool.
    """
    try:
        return await run_tool(argv, **kwargs)
    except (ToolTimeoutError, ToolMissingError):
        raise
    except ToolError as exc:
        if Path(argv[0]).name == "soffice" or not exc.message.startswith(argv[0]):
            raise
        raise ToolError(
            "soffice" + exc.message.removeprefix(argv[0]),
            argv=exc.argv,
            returncode=exc.returncode,
            stderr_tail=exc.stderr_tail,
        ) from exc


def _soffice() -> str:
    executable = shutil.which("soffice")
    if executable is None:
        raise ToolMissingError("soffice is not on PATH: install it (see README, runner image)")
    return executable


def _pipe_name(profile_url: str) -> str:
    """LibreOffice's single-instance pipe for a profile (desktop/.../officeipcthread.cxx)."""
    digest = hashlib.md5(profile_url.encode("utf-16-le"), usedforsecurity=False).digest()
    return f"OSL_PIPE_{os.getuid()}_SingleOfficeIPC_" + "".join(f"{byte:x}" for byte in digest)


def remove_stale_pipes(under: Path) -> None:
    """Remove the pipe files left by killed soffice processes of the slots under `under`."""
    for slot_dir in under.glob("office/office-slot-*"):
        name = _pipe_name((slot_dir / "profile").absolute().as_uri())
        for folder in _PIPE_DIRS:
            with contextlib.suppress(OSError):
                (folder / name).unlink(missing_ok=True)


def _default_limits() -> ToolLimits:
    defaults = Settings.model_fields
    return office_limits(
        memory_bytes=defaults["office_memory_bytes"].default,
        timeout_seconds=defaults["doc_timeout_seconds"].default,
        max_pdf_bytes=defaults["doc_max_pdf_bytes"].default,
    )


def profile_settings_xcu() -> str:
    """_PROFILE_SETTINGS as the items of a registrymodifications.xcu."""
    lines = []
    for path, name, value in _PROFILE_SETTINGS:
        rendered = f"<value>{value}</value>" if value else "<value/>"
        lines.append(
            f'<item oor:path="{path}"><prop oor:name="{name}" oor:op="fuse">{rendered}</prop></item>'
        )
    return "\n".join(lines)


def write_profile_settings(profile_dir: Path) -> None:
    """Add _PROFILE_SETTINGS to a profile's registrymodifications.xcu (created if missing).

    LibreOffice writes the file back when it exits and keeps the values set in it; the items go
    last, so they win over any earlier item for the same property. Never call it while a soffice
    runs on the profile: it would write its own copy over this one.
    """
    xcu = profile_dir / "user" / "registrymodifications.xcu"
    try:
        text = xcu.read_text(encoding="utf-8")
    except FileNotFoundError:
        xcu.parent.mkdir(parents=True, exist_ok=True)
        text = f'<?xml version="1.0" encoding="UTF-8"?>\n{_XCU_ITEMS_OPEN}\n</oor:items>\n'
    closing = text.rfind("</oor:items>")
    if closing < 0:
        raise OSError(f"{xcu} has no </oor:items>: LibreOffice wrote a profile this code does not know")
    xcu.write_text(text[:closing] + profile_settings_xcu() + "\n" + text[closing:], encoding="utf-8")


def _group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) used so far by the live processes of a process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            # After the command: state, ppid, pgrp, ... utime (14th field) and stime (15th).
            if int(fields[2]) == pgid:
                total += int(fields[11]) + int(fields[12])
    return total / ticks


def kill_stale_office(under: Path) -> int:
    """Kill the process groups of soffice processes whose profile lies under `under`.

    For a runner starting over what a killed one left: their profiles are not in use by anyone
    alive. Returns how many process groups were killed.
    """
    marker = f"-env:UserInstallation={under.absolute().as_uri()}/".encode()
    groups = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().split(b"\0")
            if any(arg.startswith(marker) for arg in args):
                with contextlib.suppress(ProcessLookupError):
                    groups.add(os.getpgid(int(entry.name)))
    groups.discard(os.getpgrp())  # never our own group
    for group in groups:
        kill_group(group)
    return len(groups)
