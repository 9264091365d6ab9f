"""The runner's own work directory: locked while it lives, removed with its soffice once it is dead.

The last test is the issue's scenario with real processes and a real SIGKILL (issue 10, item 9):
a runner killed mid-conversion leaves its soffice running and its directories behind; the next
runner kills the one and removes the others as it starts, before any task, and leaves the API's
uploads alone.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, Proc, wait_http
from tests.factories import make_docx
from wcu_ai.documents.office import kill_stale_office
from wcu_ai.documents.workdir import RunnerWorkDir


def test_a_runner_takes_a_locked_directory_of_its_own_and_removes_it_at_close(tmp_path: Path) -> None:
    first, second = RunnerWorkDir(tmp_path), RunnerWorkDir(tmp_path)
    mine = first.open()
    assert mine.name.startswith("runner-") and mine.is_dir()
    (mine / "office").mkdir()
    # A second runner on the same directory (a hot standby on the same host): its own, and mine stays.
    theirs = second.open()
    assert theirs != mine and (mine / "office").is_dir()
    first.close()
    assert not mine.exists() and theirs.is_dir()
    second.close()
    assert list(tmp_path.iterdir()) == []


def test_a_dead_runners_directory_is_removed_and_nothing_else(tmp_path: Path) -> None:
    dead = tmp_path / "runner-deadbeef"
    (dead / "wcu-parse-x" / "pdf").mkdir(parents=True)
    # Nobody holds its lock: its runner is gone.
    (dead / "wcu-parse-x" / "pdf" / "source.pdf").write_bytes(b"%PDF-1.4 left behind")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "upload-in-progress").write_bytes(b"the API's")
    (tmp_path / "runner-notes.txt").write_text("not a directory: not a runner's")
    starting = tmp_path / ".starting-abc"  # a runner that is starting right now
    starting.mkdir()
    work = RunnerWorkDir(tmp_path)
    mine = work.open()
    try:
        assert not dead.exists()
        assert (uploads / "upload-in-progress").read_bytes() == b"the API's"
        assert (tmp_path / "runner-notes.txt").exists() and starting.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [mine.name, "uploads", "runner-notes.txt", ".starting-abc"]
        )
    finally:
        work.close()


def _office_under(
    directory: Path, processes_mentioning: Callable[[str], list[int]], *, role: bytes, binary: bytes = b""
) -> list[int]:
    """LibreOffice processes on a profile under `directory` whose command line holds `role`."""
    found = []
    for pid in processes_mentioning(str(directory)):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if binary in cmdline and role in cmdline:
            found.append(pid)
    return found


def _runner_dirs(work_dir: Path) -> list[Path]:
    return sorted(p for p in work_dir.glob("runner-*") if p.is_dir())


@pytest.mark.documents
def test_after_sigkill_the_next_runner_kills_the_stale_soffice_and_removes_the_leftovers_at_start(
    start: Callable[..., Proc],
    service_env: dict[str, str],
    tmp_path: Path,
    processes_mentioning: Callable[[str], list[int]],
) -> None:
    work_dir = Path(service_env["WCU_WORK_DIR"])
    try:
        runner = start("runner")
        runner.wait_for("runner.leader", timeout=60)
        api = start("api")
        base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
        wait_http(f"{base}/health/ready")
        # Long enough to be mid-conversion when the runner is killed (seconds, warm), and varied enough
        # not to compress like a zip bomb.
        words = random.Random(9)
        pages = [
            " ".join(f"{words.choice('bcdfghklmnprstvz')}{words.randrange(10**6)}" for _ in range(300))
            for _ in range(400)
        ]
        document = make_docx(tmp_path / "long.docx", pages)
        with document.open("rb") as fh:
            response = httpx.post(
                f"{base}/v1/documents",
                headers={"Authorization": f"Bearer {API_KEY}"},
                files={"file": ("long.docx", fh, "application/octet-stream")},
                timeout=30,
            )
        assert response.status_code == 202, response.text
        (dead_dir,) = _runner_dirs(work_dir)
        deadline = time.monotonic() + 90
        # The warm instance (it holds the keepalive document) is converting: the request is in flight.
        while not (
            _office_under(dead_dir, processes_mentioning, role=b"keepalive", binary=b"soffice.bin")
            and _office_under(dead_dir, processes_mentioning, role=b"--convert-to")
        ):
            assert time.monotonic() < deadline, runner.output()[-3000:]
            time.sleep(0.02)

        runner.popen.send_signal(signal.SIGKILL)
        runner.popen.wait(10)
        time.sleep(1)
        stale = _office_under(dead_dir, processes_mentioning, role=b"keepalive", binary=b"soffice.bin")
        assert stale, "the killed runner's soffice should have outlived it (that is the defect)"
        assert list(dead_dir.glob("wcu-parse-*")), "the per-document directory should have been left behind"
        uploads = work_dir / "uploads"
        uploads.mkdir(exist_ok=True)
        (uploads / "api-upload-in-progress").write_bytes(b"not the runner's")

        successor = start("runner")
        event = successor.wait_for("runner.work_dir", timeout=60)
        # At start, before taking any task: not when the slot is next used.
        assert event["dead_runner_dirs_removed"] == 1 and event["stale_soffice_killed"] >= 1, event
        for _ in range(100):
            if not any(Path(f"/proc/{pid}").exists() and _is_alive(pid) for pid in stale):
                break
            time.sleep(0.05)
        assert [pid for pid in stale if _is_alive(pid)] == []
        assert not dead_dir.exists()
        assert (uploads / "api-upload-in-progress").read_bytes() == b"not the runner's"
        successor.wait_for("runner.leader", timeout=60)
        api.signal(signal.SIGTERM)
        successor.signal(signal.SIGTERM)
        assert successor.wait() == 0 and api.wait() == 0
        assert _runner_dirs(work_dir) == []  # a clean stop removes the runner's own directory
    finally:  # whatever failed, no LibreOffice of this test outlives it
        kill_stale_office(work_dir)


def _is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
