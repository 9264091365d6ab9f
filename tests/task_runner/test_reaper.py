"""The runner as a container's PID 1: orphans are reaped, stop signals reach the runner."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import skip_or_fail, wcu_ai_command

pytestmark = pytest.mark.pid_namespace

# The shape of LibreOffice being killed mid-conversion: a process whose parent is gone.
ORPHAN_MAKER = (
    "import subprocess, time; subprocess.Popen(['sh', '-c', '(sleep 0.2 &)']).wait(); time.sleep(60)"
)


@pytest.fixture
def unshare() -> str:
    path = shutil.which("unshare")
    if path is None or subprocess.run([path, "--pid", "--fork", "true"], check=False).returncode != 0:
        skip_or_fail("needs unshare (util-linux) and permission to create a PID namespace (root)")
    return path


def as_pid1(
    unshare: str, argv: list[str], env: dict[str, str] | None = None, stdout: IO[bytes] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """Runs argv as PID 1 of a new PID namespace; returns the namespace's PID 1 as seen from here."""
    proc = subprocess.Popen([unshare, "--pid", "--fork", "--mount-proc", *argv], env=env, stdout=stdout)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = children.read_text().split()
        if pids:
            return proc, int(pids[0])
        time.sleep(0.02)
    raise AssertionError("the namespace's first process did not start")


def zombie_children(pid: int) -> list[int]:
    zombies = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        stat = Path(f"/proc/{child}/stat").read_text(errors="replace")
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            zombies.append(int(child))
    return zombies


def settle_zombies(pid: int) -> list[int]:
    time.sleep(1.0)  # the orphan lives 0.2 s; give it time to exit and, with a reaper, be reaped
    return zombie_children(pid)


def test_without_the_reaper_an_orphan_stays_a_zombie(unshare: str) -> None:
    """The control: a Python PID 1 that does not reap leaves the orphan as a zombie."""
    proc, pid1 = as_pid1(unshare, [sys.executable, "-c", ORPHAN_MAKER])
    try:
        assert len(settle_zombies(pid1)) == 1
    finally:
        proc.kill()
        proc.wait()


def test_run_as_init_reaps_orphans_and_forwards_sigterm(unshare: str) -> None:
    code = (
        "import sys; from wcu_ai.task_runner.reaper import run_as_init; "
        f"sys.exit(run_as_init([sys.executable, '-c', {ORPHAN_MAKER!r}]))"
    )
    proc, pid1 = as_pid1(unshare, [sys.executable, "-c", code])
    try:
        assert settle_zombies(pid1) == []
        [runner] = Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()
        assert Path(f"/proc/{runner}/cmdline").read_bytes().split(b"\0")[1] == b"-c"
        os.kill(pid1, signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM  # the child died of the forwarded SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_runner_as_pid1_leads_then_stops_cleanly_on_sigterm(
    unshare: str, service_env: dict[str, str], tmp_path: Path
) -> None:
    log_path = tmp_path / "runner.log"
    with log_path.open("wb") as log:
        proc, pid1 = as_pid1(unshare, [*wcu_ai_command(), "runner"], env=service_env, stdout=log)
        try:
            deadline = time.monotonic() + 60
            while b'"action": "runner.leader"' not in log_path.read_bytes():
                assert time.monotonic() < deadline, log_path.read_text()
                assert proc.poll() is None, log_path.read_text()
                time.sleep(0.05)
            # PID 1 is the init; the runner that leads is its child.
            assert Path(f"/proc/{pid1}/task/{pid1}/children").read_text().split()
            os.kill(pid1, signal.SIGTERM)
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert b'"action": "runner.stopped"' in log_path.read_bytes()
