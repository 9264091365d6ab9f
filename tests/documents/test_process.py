"""run_tool: argv only, own process group, killed whole on timeout and on cancellation."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wcu_ai.documents.process import (
    REQUIRED_TOOLS,
    ToolLimits,
    find_tools,
    limited_argv,
    missing_tools,
    run_tool,
    tool_env,
)
from wcu_ai.errors import ToolError, ToolMissingError, ToolOutputLimitError, ToolTimeoutError

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
    assert missing_tools(str(fake)) == [
        "soffice",
        "pdftotext",
        "pdfimages",
        "pdftoppm",
        "tesseract",
        "prlimit",
    ]


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


# -- limits -------------------------------------------------------------------------------------

# Prints its own limits, as the kernel holds them for the process and for a child it starts.
SHOW_LIMITS = textwrap.dedent(
    """
    import resource, subprocess, sys
    mine = [resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_NOFILE)]
    child = subprocess.run([sys.executable, "-c", "import resource; print(resource.getrlimit(resource.RLIMIT_AS)[0])"], capture_output=True, text=True).stdout.strip()
    print(*mine, child)
    """
)


def test_limits_hold_for_the_tool_and_its_children() -> None:
    limits = ToolLimits(memory_bytes=1 << 30, cpu_seconds=7, file_bytes=1 << 20, open_files=64)
    result = asyncio.run(run_tool([sys.executable, "-c", SHOW_LIMITS], timeout=30, limits=limits))
    assert result.stdout_text.split() == [str(1 << 30), "7", str(1 << 20), "64", str(1 << 30)]


def test_a_tool_over_its_memory_limit_fails_instead_of_growing() -> None:
    grow = "b = bytearray(512 * 1024 * 1024); print(len(b))"
    with pytest.raises(ToolError) as caught:
        asyncio.run(
            run_tool([sys.executable, "-c", grow], timeout=30, limits=ToolLimits(memory_bytes=256 << 20))
        )
    assert "MemoryError" in caught.value.stderr_tail
    # the same program without the limit succeeds: the limit, not the program, stopped it
    assert asyncio.run(run_tool([sys.executable, "-c", grow], timeout=30)).stdout_text.strip() == str(
        512 << 20
    )


def test_a_tool_over_its_cpu_limit_is_stopped_by_the_kernel() -> None:
    spin = "while True: pass"
    started = time.monotonic()
    with pytest.raises(ToolError) as caught:
        asyncio.run(run_tool([sys.executable, "-c", spin], timeout=60, limits=ToolLimits(cpu_seconds=1)))
    assert caught.value.returncode is not None and caught.value.returncode < 0  # SIGXCPU or SIGKILL
    assert not isinstance(caught.value, ToolTimeoutError)
    assert time.monotonic() - started < 30


def test_output_past_the_cap_stops_the_tool_without_buffering_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    # Writes without end; the cap must end it long before the timeout.
    endless = f"import os, sys; open({str(pid_file)!r}, 'w').write(str(os.getpid())); [sys.stdout.write('x' * 65536) for _ in iter(int, 1)]"

    async def scenario() -> bool:
        with pytest.raises(ToolOutputLimitError) as caught:
            await run_tool([sys.executable, "-c", endless], timeout=60, max_stdout_bytes=1 << 20)
        assert caught.value.limit_bytes == 1 << 20
        return await asyncio.to_thread(_wait_gone, int(pid_file.read_text()))

    assert asyncio.run(scenario()), "the tool outlived its output cap"


def test_output_up_to_the_cap_is_returned_whole() -> None:
    exact = "import sys; sys.stdout.write('y' * 100000)"
    result = asyncio.run(run_tool([sys.executable, "-c", exact], timeout=30, max_stdout_bytes=100000))
    assert result.stdout == b"y" * 100000


def test_endless_stderr_is_kept_to_its_tail() -> None:
    noisy = "import sys; [sys.stderr.write('warning ' * 1000 + '\\n') for _ in range(2000)]; sys.stderr.write('last words\\n'); sys.exit(1)"
    with pytest.raises(ToolError) as caught:
        asyncio.run(run_tool([sys.executable, "-c", noisy], timeout=30))
    assert caught.value.stderr_tail.endswith("last words")


def test_limits_need_prlimit_and_never_run_without_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    with pytest.raises(ToolMissingError, match="prlimit"):
        limited_argv(["pdftotext"], ToolLimits(cpu_seconds=1), path=str(empty))
    assert limited_argv(["pdftotext", "-v"], None) == ["pdftotext", "-v"]
    assert limited_argv(["pdftotext", "-v"], ToolLimits()) == ["pdftotext", "-v"]
