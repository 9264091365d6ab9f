"""run_tool: argv only, own process group, killed whole on timeout and on cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wcu_ai.documents.process import REQUIRED_TOOLS, find_tools, missing_tools, run_tool, tool_env
from wcu_ai.errors import ToolError, ToolMissingError, ToolTimeoutError

# A child that starts a grandchild, records both pids, then both sleep: the timeout must kill both.
FAMILY = textwrap.dedent(
    """
    import subprocess, sys, time
    grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(sys.argv[1], "w") as fh:
        fh.write(f"{grandchild.pid}\\n")
    time.sleep(60)
    """
)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def test_run_tool_returns_output_and_exit_code() -> None:
    result = asyncio.run(
        run_tool(
            [sys.executable, "-c", "import sys; print('héllo'); print('warn', file=sys.stderr)"], timeout=30
        )
    )
    assert result.returncode == 0
    assert result.stdout_text == "héllo\n"
    assert result.stderr_text == "warn\n"
    assert result.elapsed_seconds > 0


def test_argv_is_not_interpreted_by_a_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    result = asyncio.run(
        run_tool([sys.executable, "-c", "import sys; print(sys.argv[1])", f"; touch {marker}"], timeout=30)
    )
    assert result.stdout_text.strip() == f"; touch {marker}"
    assert not marker.exists()


def test_nonzero_exit_is_a_tool_error_with_code_and_stderr_tail() -> None:
    script = "import sys; sys.stderr.write('x' * 5000 + '\\nthe real reason\\n'); sys.exit(3)"
    with pytest.raises(ToolError) as caught:
        asyncio.run(run_tool([sys.executable, "-c", script], timeout=30))
    error = caught.value
    assert error.returncode == 3
    assert error.stderr_tail.endswith("the real reason")
    assert len(error.stderr_tail) <= 2000
    assert error.argv[0] == sys.executable
    assert "exited with 3: the real reason" in error.message


def test_missing_binary_is_tool_missing_error() -> None:
    with pytest.raises(ToolMissingError, match="wcu-no-such-tool is not on PATH"):
        asyncio.run(run_tool(["wcu-no-such-tool", "--version"], timeout=5))


def _wait_for_pid(pid_file: Path) -> None:
    deadline = time.monotonic() + 20
    while not pid_file.exists() or not pid_file.read_text().endswith("\n"):
        assert time.monotonic() < deadline, "the child never started its grandchild"
        time.sleep(0.02)


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    argv = [sys.executable, "-c", FAMILY, str(pid_file)]

    async def scenario() -> bool:
        task = asyncio.create_task(run_tool(argv, timeout=1.5))
        with pytest.raises(ToolTimeoutError) as caught:
            await task
        assert caught.value.timeout == 1.5
        # Checked before the loop closes: closing it waits for whoever holds the pipes.
        return await asyncio.to_thread(_wait_gone, int(pid_file.read_text()))

    started = time.monotonic()
    assert asyncio.run(scenario()), "the grandchild outlived the timeout"
    assert time.monotonic() - started < 10


def test_cancellation_kills_the_whole_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    argv = [sys.executable, "-c", FAMILY, str(pid_file)]

    async def scenario() -> bool:
        task = asyncio.create_task(run_tool(argv, timeout=60))
        await asyncio.to_thread(_wait_for_pid, pid_file)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await asyncio.to_thread(_wait_gone, int(pid_file.read_text()))

    started = time.monotonic()
    assert asyncio.run(scenario()), "the grandchild outlived the cancellation"
    assert time.monotonic() - started < 10


def test_no_time_left_does_not_start_the_tool(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ToolTimeoutError):
        asyncio.run(run_tool([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], timeout=0))
    assert not marker.exists()


def test_find_tools_and_missing_tools_follow_path(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    assert find_tools(str(empty)) == dict.fromkeys(REQUIRED_TOOLS)
    assert missing_tools(str(empty)) == list(REQUIRED_TOOLS)
    fake = tmp_path / "bin"
    fake.mkdir()
    tool = fake / "pdfinfo"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert find_tools(str(fake))["pdfinfo"] == str(tool)
    assert missing_tools(str(fake)) == ["soffice", "pdftotext"]


def test_tool_env_is_private_and_has_no_secrets(tmp_path: Path) -> None:
    base = {
        "PATH": "/usr/bin",
        "DATABASE_URL": "postgresql://u:p@h/db",
        "WCU_API_KEYS": "k" * 20,
        "AWS_SECRET_ACCESS_KEY": "s",
        "OPENAI_API_KEY": "o",
        "FONTCONFIG_FILE": "/etc/fonts/fonts.conf",
        "XDG_RUNTIME_DIR": "/run/user/0",
    }
    env = tool_env(tmp_path / "home", tmp_path / "tmp", base)
    assert env["HOME"] == str(tmp_path / "home")
    assert env["TMPDIR"] == env["TMP"] == env["TEMP"] == str(tmp_path / "tmp")
    assert env["PATH"] == "/usr/bin"
    assert env["FONTCONFIG_FILE"] == "/etc/fonts/fonts.conf"
    assert env["LC_ALL"] == "C.UTF-8"
    for secret in (
        "DATABASE_URL",
        "WCU_API_KEYS",
        "AWS_SECRET_ACCESS_KEY",
        "OPENAI_API_KEY",
        "XDG_RUNTIME_DIR",
    ):
        assert secret not in env


def test_tool_runs_with_given_cwd_and_env(tmp_path: Path) -> None:
    env = tool_env(tmp_path, tmp_path, {"PATH": os.environ["PATH"]})
    result = asyncio.run(
        run_tool(
            [sys.executable, "-c", "import os; print(os.getcwd()); print(os.environ['HOME'])"],
            timeout=30,
            cwd=tmp_path,
            env=env,
        )
    )
    assert result.stdout_text.split() == [str(tmp_path), str(tmp_path)]
