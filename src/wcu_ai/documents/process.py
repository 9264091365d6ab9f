"""Running the external document tools (LibreOffice, poppler, Tesseract) with limits.

Every tool runs from an argv list (never a shell) in its own session, so it leads a new process
group; on timeout or cancellation the whole group is killed, which takes LibreOffice's
oosplash -> soffice.bin pair down with it. A non-zero exit becomes a ToolError that keeps the
exit code and the tail of stderr.

Kernel limits (ToolLimits: address space, CPU seconds, file size, open files) are set by
util-linux's `prlimit` exec'ing the tool, so they hold from its first instruction and are
inherited by everything it starts. A preexec_fn would do the same without the extra exec, but
it makes subprocess fork() the whole runner instead of vfork(): 17 ms per tool at 300 MB RSS
against 2 ms for the prlimit exec (measured on this project's CI machine). Output is read as it
arrives and the tool is killed once it passes `max_stdout_bytes`: nothing a tool prints is
buffered past the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.errors import ToolError, ToolMissingError, ToolOutputLimitError, ToolTimeoutError

logger = logging.getLogger(__name__)

#: The tools the document pipeline needs on PATH (pdfimages, pdftoppm, tesseract: OCR of scanned pages).
REQUIRED_TOOLS = ("soffice", "pdftotext", "pdfinfo", "pdfimages", "pdftoppm", "tesseract", "prlimit")

_STDERR_TAIL_CHARS = 2000

# Variables never handed to a document tool: a tool reading a hostile file has no use for them.
_SECRET_NAME = re.compile(r"(^DATABASE_URL$|^WCU_|^AWS_|^PG|KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)


@functools.lru_cache(maxsize=1024)
def _secret_name(name: str) -> bool:
    # Remembered: the regex over every variable was most of a tool start's own Python time.
    return _SECRET_NAME.search(name) is not None


@dataclass(frozen=True, slots=True)
class ToolLimits:
    """Kernel resource limits (setrlimit) for a tool and every process it starts; None: unlimited.

    memory_bytes is the address space (RLIMIT_AS): an allocation past it fails inside the tool,
    which then exits non-zero. cpu_seconds (RLIMIT_CPU) ends a tool that computes without end
    with SIGXCPU, also when the wall-clock timeout is long. file_bytes (RLIMIT_FSIZE) bounds every
    file it writes, open_files (RLIMIT_NOFILE) the descriptors it may hold.
    """

    memory_bytes: int | None = None
    cpu_seconds: int | None = None
    file_bytes: int | None = None
    open_files: int | None = None

    def prlimit_argv(self) -> list[str]:
        """The `prlimit` prefix that applies these limits ([] when there are none)."""
        options = [
            f"--{name}={int(value)}"
            for name, value in (
                ("as", self.memory_bytes),
                ("cpu", self.cpu_seconds),
                ("fsize", self.file_bytes),
                ("nofile", self.open_files),
            )
            if value is not None
        ]
        return ["prlimit", *options, "--"] if options else []


def limited_argv(argv: list[str], limits: ToolLimits | None, *, path: str | None = None) -> list[str]:
    """`argv` run under `limits`: prefixed with the prlimit command (argv[0] resolved on `path`).

    Raises ToolMissingError when prlimit is needed and not on PATH: a tool is never run without
    the limits it was given.
    """
    prefix = limits.prlimit_argv() if limits is not None else []
    if not prefix:
        return list(argv)
    prlimit = shutil.which("prlimit", path=path)
    if prlimit is None:
        raise ToolMissingError("prlimit is not on PATH: install util-linux (the runner image has it)")
    return [prlimit, *prefix[1:], *argv]


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool that exited with status 0 produced."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    elapsed_seconds: float

    @property
    def stdout_text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def stderr_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


def find_tools(path: str | None = None) -> dict[str, str | None]:
    """Where each required tool is on PATH (or on `path`), None for a missing one."""
    return {name: shutil.which(name, path=path) for name in REQUIRED_TOOLS}


def missing_tools(path: str | None = None) -> list[str]:
    """The required tools that are not on PATH, for the runner to report at start."""
    return [name for name, where in find_tools(path).items() if where is None]


def tool_env(home: Path, tmp_dir: Path, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a tool: a private HOME and TMPDIR, UTF-8, and no secrets.

    The rest of `base` (default: this process's environment) is kept, since images set tool
    paths such as FONTCONFIG_FILE there.
    """
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if not _secret_name(k)}
    env.update(
        {
            "HOME": str(home),
            "TMPDIR": str(tmp_dir),
            "TMP": str(tmp_dir),
            "TEMP": str(tmp_dir),
            "LC_ALL": "C.UTF-8",
            "LANG": "C.UTF-8",
        }
    )
    env.pop("XDG_RUNTIME_DIR", None)
    return env


def stderr_tail(stderr: bytes, limit: int = _STDERR_TAIL_CHARS) -> str:
    text = stderr.decode("utf-8", errors="replace").strip()
    return text[-limit:]


def kill_group(pgid: int) -> None:
    """SIGKILL a whole process group; one already gone is fine.

    A tool started with start_new_session=True leads its own group: its pgid is its pid.
    """
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def run_tool(
    argv: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    limits: ToolLimits | None = None,
    max_stdout_bytes: int | None = None,
) -> ToolResult:
    """Run `argv` to completion within `timeout` seconds and return its output.

    Raises ToolMissingError when argv[0] (or prlimit, with `limits`) is not on PATH,
    ToolTimeoutError after killing the process group when the time runs out,
    ToolOutputLimitError after killing it when stdout passes `max_stdout_bytes`, and ToolError
    for a non-zero exit (a tool stopped by one of its `limits` exits non-zero or by a signal).
    On cancellation the process group is killed and reaped before CancelledError propagates.
    """
    if not argv:
        raise ValueError("argv is empty")
    if timeout <= 0:
        raise ToolTimeoutError(f"{argv[0]}: no time left to run it", argv=list(argv), timeout=timeout)
    search_path = (env if env is not None else os.environ).get("PATH")
    executable = shutil.which(argv[0], path=search_path)
    if executable is None:
        raise ToolMissingError(f"{argv[0]} is not on PATH: install it (see README, runner image)")
    command = limited_argv([executable, *argv[1:]], limits, path=search_path)
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise ToolMissingError(f"{argv[0]} could not be started: {exc}") from exc
    except PermissionError as exc:
        raise ToolError(f"{argv[0]} could not be started: {exc}", argv=list(argv)) from exc

    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await _communicate(proc, max_stdout_bytes)
    except _OutputLimit:
        await _kill_and_reap(proc)
        raise ToolOutputLimitError(
            f"{argv[0]} wrote more than {max_stdout_bytes} bytes and was stopped",
            argv=list(argv),
            limit_bytes=max_stdout_bytes or 0,
        ) from None
    except TimeoutError:
        await _kill_and_reap(proc)
        logger.warning(
            "tool timed out; process group killed",
            extra={"action": "tool_timeout", "tool": argv[0], "timeout": timeout},
        )
        raise ToolTimeoutError(
            f"{argv[0]} ran longer than {timeout:g} s and was stopped",
            argv=list(argv),
            timeout=timeout,
        ) from None
    except BaseException:
        # Cancellation (or anything else): never leave the group running behind us.
        await _kill_and_reap(proc)
        raise

    elapsed = time.monotonic() - started
    returncode = proc.returncode if proc.returncode is not None else -1
    if returncode != 0:
        tail = stderr_tail(stderr)
        last_line = tail.splitlines()[-1] if tail else "no message on stderr"
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with {returncode}"
        raise ToolError(
            f"{argv[0]} {how}: {last_line}",
            argv=list(argv),
            returncode=returncode,
            stderr_tail=tail,
        )
    return ToolResult(tuple(argv), returncode, stdout, stderr, elapsed)


class _OutputLimit(Exception):
    pass


_READ_CHUNK = 64 * 1024


async def _communicate(proc: asyncio.subprocess.Process, max_stdout_bytes: int | None) -> tuple[bytes, bytes]:
    """stdout and stderr to EOF, then the exit; _OutputLimit as soon as stdout passes the cap.

    stderr is kept to its last few kilobytes only: a tool may write warnings without end.
    """
    assert proc.stdout is not None and proc.stderr is not None

    async def read_stdout() -> bytes:
        assert proc.stdout is not None
        parts: list[bytes] = []
        size = 0
        while block := await proc.stdout.read(_READ_CHUNK):
            size += len(block)
            if max_stdout_bytes is not None and size > max_stdout_bytes:
                raise _OutputLimit
            parts.append(block)
        return b"".join(parts)

    async def read_stderr() -> bytes:
        assert proc.stderr is not None
        tail = b""
        while block := await proc.stderr.read(_READ_CHUNK):
            tail = (tail + block)[-4 * _STDERR_TAIL_CHARS :]
        return tail

    reading = [asyncio.ensure_future(read_stdout()), asyncio.ensure_future(read_stderr())]
    try:
        stdout, stderr = await asyncio.gather(*reading)
    except BaseException:
        for task in reading:
            task.cancel()
        await asyncio.gather(*reading, return_exceptions=True)
        raise
    await proc.wait()
    return stdout, stderr


async def _kill_and_reap(proc: asyncio.subprocess.Process) -> None:
    """Kill the tool's process group and wait for it, even while the calling task is being cancelled.

    Its pipes are closed first: output nobody reads any more (past a cap, after a timeout) would
    otherwise keep the pipe transport open, and asyncio's wait() waits for the pipes as well as
    for the exit.
    """
    kill_group(proc.pid)
    transport = proc._transport  # type: ignore[attr-defined]  # asyncio's SubprocessTransport
    for fd in (1, 2):
        pipe = transport.get_pipe_transport(fd)
        if pipe is not None:
            pipe.close()
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(proc.wait())
