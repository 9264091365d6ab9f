"""Running the external document tools (LibreOffice, poppler) with limits.

Every tool runs from an argv list (never a shell) in its own session, so it leads a new process
group; on timeout or cancellation the whole group is killed, which takes LibreOffice's
oosplash -> soffice.bin pair down with it. A non-zero exit becomes a ToolError that keeps the
exit code and the tail of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wcu_ai.errors import ToolError, ToolMissingError, ToolTimeoutError

logger = logging.getLogger(__name__)

#: The tools the document pipeline needs on PATH.
REQUIRED_TOOLS = ("soffice", "pdftotext", "pdfinfo")

_STDERR_TAIL_CHARS = 2000

# Variables never handed to a document tool: a tool reading a hostile file has no use for them.
_SECRET_NAME = re.compile(r"(^DATABASE_URL$|^WCU_|^AWS_|^PG|KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", re.I)


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
    env = {k: v for k, v in source.items() if not _SECRET_NAME.search(k)}
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
) -> ToolResult:
    """Run `argv` to completion within `timeout` seconds and return its output.

    Raises ToolMissingError when argv[0] is not on PATH, ToolTimeoutError after killing the
    process group when the time runs out, and ToolError for a non-zero exit. On cancellation
    the process group is killed and reaped before CancelledError propagates.
    """
    if not argv:
        raise ValueError("argv is empty")
    if timeout <= 0:
        raise ToolTimeoutError(f"{argv[0]}: no time left to run it", argv=list(argv), timeout=timeout)
    search_path = (env if env is not None else os.environ).get("PATH")
    executable = shutil.which(argv[0], path=search_path)
    if executable is None:
        raise ToolMissingError(f"{argv[0]} is not on PATH: install it (see README, runner image)")
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            executable,
            *argv[1:],
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
            stdout, stderr = await proc.communicate()
    except TimeoutError:
        kill_group(proc.pid)
        await _reap(proc)
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
        kill_group(proc.pid)
        await _reap(proc)
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


async def _reap(proc: asyncio.subprocess.Process) -> None:
    """Wait for a killed process, even while the calling task is being cancelled."""
    with contextlib.suppress(ProcessLookupError):
        await asyncio.shield(proc.wait())
