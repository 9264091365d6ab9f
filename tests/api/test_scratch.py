"""Upload scratch files after kill -9 of the real `wcu-ai api`: removed when an API starts again,
never while the API that writes them is alive (two APIs sharing one work directory)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.api.raw_http import RawClient, request_head
from tests.conftest import API_KEY, Proc, free_port, wait_http
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings

Start = Callable[..., Proc]
BOUNDARY = "scratch"


def partial_upload(base: str, total: int = 100_000) -> RawClient:
    """An upload that sent its headers and a tenth of its body, then waits."""
    client = RawClient.to(base)
    part = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
    ).encode()
    head = request_head(
        "POST",
        "/v1/documents",
        {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(total),
        },
    )
    client.send(head + part + b"0" * (total // 10))
    return client


def scratch_files(work: Path) -> list[Path]:
    return sorted(p for p in (work / "uploads").rglob("upload-*") if p.is_file())


def wait_for(condition: Callable[[], object], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_the_partial_upload_of_a_killed_api_is_removed_when_an_api_starts(
    start: Start, service_env: dict[str, str]
) -> None:
    work = Path(service_env["WCU_WORK_DIR"])
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    api = start("api")
    wait_http(f"{base}/health")
    client = partial_upload(base)
    try:
        assert wait_for(lambda: scratch_files(work)), "the upload never reached its scratch file"
        [left] = scratch_files(work)
        api.signal(signal.SIGKILL)
        api.wait()
    finally:
        client.close()
    assert left.exists(), "kill -9 leaves the partial file (nothing ran to remove it)"

    again = start("api")
    wait_http(f"{base}/health")
    assert not left.exists()
    assert scratch_files(work) == []
    own = [p for p in (work / "uploads").iterdir()]
    assert [p.name.split("-")[0] for p in own] == [str(again.popen.pid)], own
    assert "api.scratch_cleaned" in again.actions()


def test_a_starting_api_leaves_the_uploads_of_a_live_one_alone(
    start: Start, service_env: dict[str, str], db_url: str
) -> None:
    MigrationTool(Settings(DATABASE_URL=db_url)).run_up()
    work = Path(service_env["WCU_WORK_DIR"])
    base = f"http://127.0.0.1:{service_env['WCU_API_PORT']}"
    start("api")
    wait_http(f"{base}/health")
    total = 100_000
    client = partial_upload(base, total)
    try:
        assert wait_for(lambda: scratch_files(work))
        [in_flight] = scratch_files(work)
        other_port = free_port()
        start("api", WCU_API_PORT=str(other_port))
        wait_http(f"http://127.0.0.1:{other_port}/health")
        assert in_flight.exists(), "a second API removed the in-flight upload of the first"
        # The first API's upload completes, with all its bytes.
        sent = total // 10 + len(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
        )
        closing = f"\r\n--{BOUNDARY}--\r\n".encode()
        client.send(b"0" * (total - sent - len(closing)) + closing)
        response = client.response()
        assert response is not None and response.status == 202, response and response.body
    finally:
        client.close()
