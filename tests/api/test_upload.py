"""Uploads through the real `wcu-ai api` process that must store nothing: bodies cut short, clients
that stall or vanish, a full scratch disk, no file descriptors left. What is stored is read from the
tables, never inferred from the status code."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.factories import make_pdf

UPLOAD_LIMIT = 4 * 1024 * 1024
BOUNDARY = "wcu-test-boundary"


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The API on a migrated database, no runner: whatever an upload stores stays in the tables."""
    env = {"WCU_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT)}
    with service_stack(pg_server_url, tmp_path_factory.mktemp("upload"), runner=False, **env) as running:
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
