"""Uploads through the real `wcu-ai api` process that must store nothing: bodies cut short, clients
that stall or vanish, a full scratch disk, no file descriptors left. What is stored is read from the
tables, never inferred from the status code."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.api.raw_http import RawClient, request_head
from tests.conftest import API_KEY
from tests.factories import make_pdf

UPLOAD_LIMIT = 4 * 1024 * 1024
BOUNDARY = "wcu-test-boundary"
BODY_TIMEOUT = 1.0
BODY_MAX = 4.0
# One upload at the limit and half of another: what this API may hold on its scratch disk at once.
SCRATCH_BUDGET = UPLOAD_LIMIT + UPLOAD_LIMIT // 2


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The API on a migrated database, no runner: whatever an upload stores stays in the tables."""
    env = {
        "WCU_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
        "WCU_API_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "WCU_API_BODY_MAX_SECONDS": str(BODY_MAX),
    }
    with service_stack(pg_server_url, tmp_path_factory.mktemp("upload"), runner=False, **env) as running:
        yield running


@pytest.fixture(scope="module")
def budget_stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The same with a scratch budget, and a body time long enough to hold an upload open."""
    env = {
        "WCU_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT),
        "WCU_API_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
        "WCU_API_BODY_MAX_SECONDS": "300",
        "WCU_API_MAX_SCRATCH_BYTES": str(SCRATCH_BUDGET),
    }
    with service_stack(pg_server_url, tmp_path_factory.mktemp("budget"), runner=False, **env) as running:
        yield running


def stored(db_url: str) -> dict[str, int]:
    """Rows of every table an upload writes."""
    with psycopg.connect(db_url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
                " AND (relname LIKE 'parsed_document%%' OR relname = 'ai_server_tasks')"
            ).fetchall()
        ]
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]


def file_part_head(filename: str = "doc.pdf", field: str = "file") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: application/pdf\r\n\r\n"
    ).encode()


def closing() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def post(stack: ServiceStack, body: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(
        f"{stack.base}/v1/documents",
        content=body,
        headers={**stack.auth, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        timeout=30,
    )


def scratch_files(stack: ServiceStack) -> list[Path]:
    uploads = stack.work_dir / "uploads"
    return [p for p in uploads.rglob("*") if p.is_file() and p.name.startswith("upload-")]


@pytest.fixture
def pdf_bytes(tmp_path: Path) -> bytes:
    return make_pdf(tmp_path / "doc.pdf", [f"Truncation case {tmp_path.name}"] * 3).read_bytes()


@pytest.mark.parametrize(
    "cut",
    [
        "no-closing-boundary",
        "half-of-the-file",
        "delimiter-cut-short",
        "closing-boundary-without-crlf",
        "closing-boundary-right-after-the-headers",
        "next-part-never-closed",
    ],
)
def test_a_multipart_body_cut_short_is_400_and_stores_nothing(
    stack: ServiceStack, pdf_bytes: bytes, cut: str
) -> None:
    """The body arrives whole at the HTTP level (Content-Length matches), the multipart inside is cut."""
    before = stored(stack.db_url)
    head = file_part_head()
    body = {
        "no-closing-boundary": head + pdf_bytes,
        "half-of-the-file": head + pdf_bytes[: len(pdf_bytes) // 2],
        "delimiter-cut-short": head + pdf_bytes + f"\r\n--{BOUNDARY}"[:-3].encode(),
        # Without its CRLF the closing boundary is file data: the part never ends.
        "closing-boundary-without-crlf": head + pdf_bytes + f"--{BOUNDARY}--\r\n".encode(),
        "closing-boundary-right-after-the-headers": head + f"--{BOUNDARY}--\r\n".encode(),
        "next-part-never-closed": head
        + pdf_bytes
        + f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhalf a note'.encode(),
    }[cut]
    response = post(stack, body)
    assert response.status_code == 400, response.text
    assert "incomplete" in response.json()["detail"]
    assert stored(stack.db_url) == before
    assert scratch_files(stack) == []


def test_a_chunked_body_that_ends_before_the_closing_boundary_is_400(
    stack: ServiceStack, pdf_bytes: bytes
) -> None:
    """Transfer-Encoding: chunked ended by its last chunk, the multipart inside it not."""

    def chunks() -> Iterator[bytes]:
        yield file_part_head()
        yield pdf_bytes[:300]
        yield pdf_bytes[300:600]

    before = stored(stack.db_url)
    response = post(stack, chunks())
    assert response.status_code == 400, response.text
    assert "closing boundary" in response.json()["detail"]
    assert stored(stack.db_url) == before


def test_the_same_body_complete_is_stored_once(stack: ServiceStack, pdf_bytes: bytes) -> None:
    """The control: with its closing boundary the same upload is a document, with all its bytes."""
    before = stored(stack.db_url)
    response = post(stack, file_part_head() + pdf_bytes + closing())
    assert response.status_code == 202, response.text
    document = stack.get(f"/v1/documents/{response.json()['document_id']}").json()
    assert document["size_bytes"] == len(pdf_bytes)
    after = stored(stack.db_url)
    assert after["parsed_documents"] == before["parsed_documents"] + 1
    assert after["ai_server_tasks"] == before["ai_server_tasks"] + 1


def upload_head(content_length: int) -> bytes:
    return request_head(
        "POST",
        "/v1/documents",
        {
            "Authorization": f"Bearer {API_KEY}",
            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            "Content-Length": str(content_length),
        },
    )


def log_records(stack: ServiceStack, since: int) -> list[dict[str, object]]:
    records = []
    for line in stack.api.output()[since:].splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            records.append({"level": "unparsed", "msg": line})
    return records


def wait_until(condition: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_client_that_disconnects_mid_upload_is_one_warning_and_nothing_stored(
    stack: ServiceStack, pdf_bytes: bytes
) -> None:
    before, log_at = stored(stack.db_url), len(stack.api.output())
    body = file_part_head() + pdf_bytes + closing()
    client = RawClient.to(stack.base)
    client.send(upload_head(len(body)) + body[: len(body) // 2])
    assert wait_until(lambda: scratch_files(stack)), "the upload never reached its scratch file"
    client.close()
    assert wait_until(
        lambda: any(r.get("action") == "api.client_disconnected" for r in log_records(stack, log_at))
    )
    records = log_records(stack, log_at)
    warnings = [r for r in records if r.get("action") == "api.client_disconnected"]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning" and "exc" not in warnings[0]
    assert [r for r in records if r.get("level") not in ("info", "warning")] == []
    assert "Traceback" not in stack.api.output()[log_at:]
    assert wait_until(lambda: scratch_files(stack) == [])
    assert stored(stack.db_url) == before


def assert_408_naming(
    stack: ServiceStack, pdf_bytes: bytes, setting: str, send: Callable[[RawClient, bytes], None]
) -> None:
    """An upload whose body `send` delivers too slowly: 408 naming `setting`, closed, nothing stored."""
    before = stored(stack.db_url)
    body = file_part_head() + pdf_bytes + closing()
    client = RawClient.to(stack.base)
    try:
        client.send(upload_head(len(body)))
        send(client, body)
        response = client.response(timeout=BODY_MAX + 15)
        assert response is not None and response.status == 408, response
        assert setting in response.json()["detail"]
        assert response.closed
    finally:
        client.close()
    assert wait_until(lambda: scratch_files(stack) == [])
    assert stored(stack.db_url) == before


def test_a_client_that_stalls_mid_body_gets_408_and_nothing_is_stored(
    stack: ServiceStack, pdf_bytes: bytes
) -> None:
    assert_408_naming(
        stack, pdf_bytes, "WCU_API_BODY_TIMEOUT_SECONDS", lambda client, body: client.send(body[:200])
    )


def test_a_client_that_trickles_within_each_wait_gets_408_at_the_total_and_nothing_is_stored(
    stack: ServiceStack, pdf_bytes: bytes
) -> None:
    def trickle(client: RawClient, body: bytes) -> None:
        client.send(body[:100])
        # A piece every half of BODY_TIMEOUT: no single wait times out; their sum must.
        for i in range(40):
            time.sleep(BODY_TIMEOUT / 2)
            if not client.send(body[100 + i : 101 + i]):
                return  # the API answered and closed

    assert_408_naming(stack, pdf_bytes, "WCU_API_BODY_MAX_SECONDS", trickle)


@contextlib.contextmanager
def soft_limit(pid: int, which: int, soft: int) -> Iterator[None]:
    """Lowers a soft resource limit of another process (prlimit(2)) for the block, then restores it."""
    previous = resource.prlimit(pid, which)
    resource.prlimit(pid, which, (soft, previous[1]))
    try:
        yield
    finally:
        resource.prlimit(pid, which, previous)


def test_a_full_scratch_disk_is_507_in_json_and_nothing_stored(stack: ServiceStack, tmp_path: Path) -> None:
    """RLIMIT_FSIZE on the API process: every write past 64 KiB fails with EFBIG, as on a full disk
    (Python ignores SIGXFSZ)."""
    big = make_pdf(
        tmp_path / "big.pdf", [f"Page {i} of a document too big for the disk left. " * 20 for i in range(80)]
    )
    assert big.stat().st_size > 128 * 1024
    before, log_at = stored(stack.db_url), len(stack.api.output())
    with soft_limit(stack.api.popen.pid, resource.RLIMIT_FSIZE, 64 * 1024):
        response = stack.upload(big)
    assert response.status_code == 507, response.text
    assert response.headers["content-type"] == "application/json"
    assert "WCU_WORK_DIR" in response.json()["detail"]
    assert stored(stack.db_url) == before
    assert scratch_files(stack) == []
    assert "Traceback" not in stack.api.output()[log_at:]
    # Space again: the same upload goes through.
    assert stack.upload(big).status_code == 202


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_out_of_file_descriptors_is_503_in_json_never_500(stack: ServiceStack, tmp_path: Path) -> None:
    """RLIMIT_NOFILE of the API process a few above what it has open: concurrent uploads get 202 or a
    JSON 503 naming the cause, the API logs no error, and serves normally once the limit is raised."""
    files = [make_pdf(tmp_path / f"fd-{i}.pdf", [f"Descriptor case {i} {tmp_path.name}"]) for i in range(30)]
    pid = stack.api.popen.pid
    log_at = len(stack.api.output())
    with (
        soft_limit(pid, resource.RLIMIT_NOFILE, open_descriptors(pid) + 3),
        concurrent.futures.ThreadPoolExecutor(len(files)) as pool,
    ):
        responses = list(pool.map(lambda f: stack.upload(f), files))
    statuses = sorted({r.status_code for r in responses})
    assert set(statuses) <= {202, 503}, [(r.status_code, r.text[:200]) for r in responses]
    unavailable = [r for r in responses if r.status_code == 503]
    assert unavailable, "no upload ran out of descriptors: the limit was not reached"
    assert all("file descriptors" in r.json()["detail"] for r in unavailable)
    records = log_records(stack, log_at)
    assert [r for r in records if r.get("level") not in ("info", "warning")] == []
    assert "Traceback" not in stack.api.output()[log_at:]
    assert wait_until(lambda: scratch_files(stack) == [])
    assert (
        stack.upload(make_pdf(tmp_path / "after.pdf", [f"After the limit {tmp_path.name}"])).status_code
        == 202
    )


class TrickledUpload:
    """An upload declaring `declared` bytes whose file trickles in (a KiB every 0.2 s, inside the
    body timeout): scratch held for as long as the test wants."""

    def __init__(self, stack: ServiceStack, declared: int) -> None:
        self.client = RawClient.to(stack.base)
        assert self.client.send(upload_head(declared) + file_part_head() + b"%PDF-1.4\n")
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._trickle, daemon=True)
        self.thread.start()

    def _trickle(self) -> None:
        while not self.stop.wait(0.2):
            if not self.client.send(b"x" * 1024):
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.client.close()


def test_uploads_past_the_scratch_budget_are_refused_507_before_the_disk_fills(
    budget_stack: ServiceStack, pdf_bytes: bytes
) -> None:
    """On Kubernetes a full emptyDir evicts the pod instead of failing a write: the API must refuse
    by its own count (WCU_API_MAX_SCRATCH_BYTES) before the volume's sizeLimit is reached."""
    before, log_at = stored(budget_stack.db_url), len(budget_stack.api.output())
    held = TrickledUpload(budget_stack, UPLOAD_LIMIT)  # reserves the limit by its Content-Length
    try:
        assert wait_until(lambda: scratch_files(budget_stack)), (
            "the first upload never reached its scratch file"
        )
        # A declared size that does not fit next to it: refused at once, before its body is read.
        refused = RawClient.to(budget_stack.base)
        try:
            refused.send(upload_head(UPLOAD_LIMIT // 2 + 64 * 1024))
            response = refused.response(timeout=BODY_TIMEOUT + 15)
        finally:
            refused.close()
        assert response is not None and response.status == 507, response
        assert response.headers["content-type"] == "application/json"
        assert "WCU_API_MAX_SCRATCH_BYTES" in response.json()["detail"]

        # No Content-Length (chunked): counted as it streams, refused once past what is left.
        def chunked() -> Iterator[bytes]:
            yield file_part_head() + b"%PDF-1.4\n"
            for _ in range(UPLOAD_LIMIT // (64 * 1024)):
                yield b"y" * 64 * 1024
            yield closing()

        streamed = post(budget_stack, chunked())
        assert streamed.status_code == 507, streamed.text
        assert "WCU_API_MAX_SCRATCH_BYTES" in streamed.json()["detail"]
        # What fits still goes through meanwhile.
        assert post(budget_stack, file_part_head() + pdf_bytes + closing()).status_code == 202
    finally:
        held.close()
    # The held upload gone, its reservation is released: a full-size upload fits again.
    assert wait_until(lambda: scratch_files(budget_stack) == [])
    # Not a PDF, so refused by type (415) once received in full: past the scratch check.
    big = file_part_head() + b"z" * (UPLOAD_LIMIT - 1024) + closing()
    assert post(budget_stack, big).status_code == 415, "refused for scratch space it had back"
    assert stored(budget_stack.db_url)["parsed_documents"] == before["parsed_documents"] + 1
    assert "Traceback" not in budget_stack.api.output()[log_at:]
