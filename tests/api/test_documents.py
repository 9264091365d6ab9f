"""Documents end to end: upload through the real API, parse in the real runner, read and search."""

from __future__ import annotations

import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import missing_tools_or_fail
from tests.factories import make_docx, make_garbage, make_pdf, make_zip_bomb

pytestmark = pytest.mark.documents

UPLOAD_LIMIT = 2 * 1024 * 1024
DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
# A DOCX encrypted by msoffcrypto-tool (tests/data/README.md): an OLE file holding EncryptedPackage.
PASSWORD_DOCX = Path(__file__).parent.parent / "data" / "password-protected.docx"


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    missing_tools_or_fail()
    env = {"WCU_UPLOAD_MAX_BYTES": str(UPLOAD_LIMIT), "WCU_TASK_RETRY_BASE_SECONDS": "0"}
    with service_stack(pg_server_url, tmp_path_factory.mktemp("docs"), **env) as stack:
        yield stack


def unique(text: str) -> str:
    """Page text that no other test uploads (uploads are de-duplicated by content)."""
    return f"{text} Reference {uuid.uuid4().hex[:12]}."


def test_a_pdf_round_trip_gives_pages_metadata_and_text(stack: ServiceStack, tmp_path: Path) -> None:
    pages = [
        unique("Quarterly revenue grew in the northern region."),
        unique("Glaciers retreat every summer."),
        unique("The committee approved the annual budget."),
    ]
    pdf = make_pdf(tmp_path / "report.pdf", pages, title="Quarterly Report", author="Finance Team")
    response = stack.upload(pdf)
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert (accepted["status"], accepted["duplicate"]) == ("queued", False)

    document = stack.wait_document(accepted["document_id"])
    assert document["status"] == "parsed", document
    assert (document["page_count"], document["title"], document["author"]) == (
        3,
        "Quarterly Report",
        "Finance Team",
    )
    assert (document["kind"], document["filename"], document["size_bytes"]) == (
        "pdf",
        "report.pdf",
        pdf.stat().st_size,
    )
    # stack.upload sends application/octet-stream, as curl -F does: the stored type is the detected one.
    assert document["content_type"] == "application/pdf"
    text = stack.get(f"/v1/documents/{accepted['document_id']}/text").json()
    assert [p["page"] for p in text["pages"]] == [1, 2, 3]
    for page, expected in zip(text["pages"], pages, strict=True):
        assert " ".join(page["text"].split()) == expected
    task = stack.get(f"/v1/tasks/{accepted['task_id']}").json()
    assert (task["status"], task["result"]["page_count"]) == ("succeeded", 3)


def test_a_docx_round_trip_goes_through_libreoffice(stack: ServiceStack, tmp_path: Path) -> None:
    pages = [unique("Onboarding checklist for new engineers."), unique("Security training is mandatory.")]
    docx = make_docx(tmp_path / "handbook.docx", pages, title="Handbook")
    response = stack.upload(docx)
    assert response.status_code == 202, response.text
    document = stack.wait_document(response.json()["document_id"])
    assert document["status"] == "parsed", document
    assert (document["kind"], document["page_count"], document["title"]) == ("docx", 2, "Handbook")
    assert document["content_type"] == DOCX_TYPE
    assert document["pdf_bytes"] > 0
    text = stack.get(f"/v1/documents/{document['id']}/text").json()
    assert [" ".join(p["text"].split()) for p in text["pages"]] == pages


def test_search_finds_the_right_document_and_page(stack: ServiceStack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    pages = [f"Introduction to ledger {marker}.", f"The zeppelin {marker} hangar houses airships."]
    pdf_id = stack.upload(make_pdf(tmp_path / "a.pdf", pages)).json()["document_id"]
    docx_pages = [f"Apiary {marker} notes: bees pollinate orchards."]
    docx_id = stack.upload(make_docx(tmp_path / "b.docx", docx_pages)).json()["document_id"]
    assert stack.wait_document(pdf_id)["status"] == "parsed"
    assert stack.wait_document(docx_id)["status"] == "parsed"

    hits = stack.get("/v1/search", q=f"zeppelin {marker}").json()
    assert hits["mode"] == "fulltext"
    assert [(h["document_id"], h["page"]) for h in hits["results"]] == [(pdf_id, 2)]
    assert "zeppelin" in hits["results"][0]["snippet"].lower()
    hits = stack.get("/v1/search", q=f'"bees pollinate" {marker}').json()
    assert [(h["document_id"], h["page"]) for h in hits["results"]] == [(docx_id, 1)]
    assert stack.get("/v1/search", q=f"{marker} -zeppelin -apiary -bees").json()["results"][0]["page"] == 1
    assert stack.get("/v1/search", q="").status_code == 422


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: make_pdf(p / "secret.pdf", [unique("Top secret")], user_password="hunter2"), "password"),
        (lambda p: _truncated(make_pdf(p / "cut.pdf", [unique("Cut short")] * 3)), ""),
        (lambda p: make_zip_bomb(p / "bomb.docx", 300 * 1024 * 1024), "uncompressed"),
    ],
    ids=["encrypted-pdf", "truncated-pdf", "zip-bomb"],
)
def test_bad_documents_fail_with_a_reason_and_the_runner_stays_up(
    stack: ServiceStack, tmp_path: Path, make: Any, reason: str
) -> None:
    response = stack.upload(make(tmp_path))
    assert response.status_code == 202, response.text
    document = stack.wait_document(response.json()["document_id"])
    assert document["status"] == "failed"
    assert reason in document["failure_reason"].lower() and len(document["failure_reason"]) > 10
    task = stack.get(f"/v1/tasks/{response.json()['task_id']}").json()
    assert (task["status"], task["last_error"]) == ("failed", document["failure_reason"])
    assert stack.get(f"/v1/documents/{document['id']}/text").status_code == 409
    assert stack.runner is not None and stack.runner.popen.poll() is None


def _truncated(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_unsupported_empty_and_oversized_uploads_are_refused(stack: ServiceStack, tmp_path: Path) -> None:
    garbage = stack.upload(make_garbage(tmp_path / "report.docx"))
    assert garbage.status_code == 415
    assert "PDF or a DOCX" in garbage.json()["detail"]
    png = tmp_path / "image.pdf"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(1000))
    assert stack.upload(png).status_code == 415
    empty = tmp_path / "empty.pdf"
    empty.write_bytes(b"")
    assert (stack.upload(empty).status_code, stack.upload(empty).json()["detail"]) == (
        422,
        "the uploaded file is empty",
    )
    big = tmp_path / "big.pdf"
    big.write_bytes(b"%PDF-1.4\n" + os.urandom(UPLOAD_LIMIT))
    response = stack.upload(big)
    assert response.status_code == 413
    assert "WCU_UPLOAD_MAX_BYTES" in response.json()["detail"]
    assert (
        stack.upload(make_pdf(tmp_path / "x.pdf", [unique("wrong field")]), field="document").status_code
        == 400
    )
    no_multipart = httpx.post(f"{stack.base}/v1/documents", headers=stack.auth, content=b"%PDF-1.4")
    assert no_multipart.status_code == 415
    broken = httpx.post(
        f"{stack.base}/v1/documents",
        content=b"--xyz\r\nnot a part",
        headers={**stack.auth, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code == 400
    with psycopg.connect(stack.db_url) as conn:
        sizes = conn.execute("SELECT size_bytes FROM parsed_documents").fetchall()
    assert all(size < UPLOAD_LIMIT for (size,) in sizes)


def _without_member(path: Path, member: str) -> Path:
    with zipfile.ZipFile(path) as src:
        kept = [(info, src.read(info)) for info in src.infolist() if info.filename != member]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in kept:
            dst.writestr(info, data)
    return path


def test_password_protected_damaged_and_old_office_files_are_refused_saying_what_to_do(
    stack: ServiceStack, tmp_path: Path
) -> None:
    """Regression: each was a 415 "unsupported document type" that did not say what was wrong."""
    refused = {
        "password": stack.upload(PASSWORD_DOCX),
        "truncated": stack.upload(_truncated(make_docx(tmp_path / "cut.docx", [unique("Cut short")]))),
        "no-main-part": stack.upload(
            _without_member(make_docx(tmp_path / "hollow.docx", [unique("Hollow")]), "word/document.xml")
        ),
    }
    old = tmp_path / "old.doc"
    old.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(4096))
    refused["ole"] = stack.upload(old)
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 415)
    detail = {name: r.json()["detail"] for name, r in refused.items()}
    assert all(d.startswith("unsupported document type") for d in detail.values()), detail
    assert "The DOCX is password-protected: remove the password" in detail["password"]
    assert "The DOCX is damaged" in detail["truncated"] and "save it again" in detail["truncated"]
    assert "The DOCX is damaged" in detail["no-main-part"] and "word/document.xml" in detail["no-main-part"]
    assert "save it as .docx" in detail["ole"] and "password" not in detail["ole"]
    with psycopg.connect(stack.db_url) as conn:
        names = {row[0] for row in conn.execute("SELECT filename FROM parsed_documents")}
    assert not names & {PASSWORD_DOCX.name, "cut.docx", "hollow.docx", "old.doc"}


def test_a_duplicate_upload_is_reported_not_parsed_twice(stack: ServiceStack, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "dup.pdf", [unique("Same bytes twice")])
    first = stack.upload(pdf).json()
    second = stack.upload(pdf, name="renamed.pdf")
    assert second.status_code == 200
    assert second.json()["duplicate"] is True
    assert (second.json()["document_id"], second.json()["task_id"]) == (
        first["document_id"],
        first["task_id"],
    )
    stack.wait_document(first["document_id"])
    with psycopg.connect(stack.db_url) as conn:
        count = conn.execute(
            "SELECT count(*) FROM ai_server_tasks WHERE payload->>'document_id' = %s", (first["document_id"],)
        ).fetchone()
    assert count == (1,)


def test_delete_removes_the_document_and_everything_derived(stack: ServiceStack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    document_id = stack.upload(make_pdf(tmp_path / "gone.pdf", [f"Ephemeral {marker} words."])).json()[
        "document_id"
    ]
    assert stack.wait_document(document_id)["status"] == "parsed"
    assert stack.get("/v1/search", q=marker).json()["results"]
    response = httpx.delete(f"{stack.base}/v1/documents/{document_id}", headers=stack.auth)
    assert response.status_code == 204
    assert stack.get(f"/v1/documents/{document_id}").status_code == 404
    assert httpx.delete(f"{stack.base}/v1/documents/{document_id}", headers=stack.auth).status_code == 404
    assert stack.get("/v1/search", q=marker).json()["results"] == []
    with psycopg.connect(stack.db_url) as conn:
        for table in ("parsed_document_blobs", "parsed_document_pages", "parsed_document_chunks"):
            count = conn.execute(
                f"SELECT count(*) FROM {table} WHERE document_id = %s", (document_id,)
            ).fetchone()
            assert count == (0,), table


def test_list_pages_through_documents(stack: ServiceStack, tmp_path: Path) -> None:
    for i in range(3):
        stack.upload(make_pdf(tmp_path / f"l{i}.pdf", [unique(f"Listing {i}")]))
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = stack.get("/v1/documents", **params).json()
        seen += [d["id"] for d in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert len(seen) == len(set(seen)) >= 3
    assert stack.get("/v1/documents", status="exploded").status_code == 422


def test_documents_need_an_api_key(stack: ServiceStack, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "anon.pdf", [unique("anonymous")])
    with pdf.open("rb") as f:
        assert httpx.post(f"{stack.base}/v1/documents", files={"file": f}).status_code == 401
    assert httpx.get(f"{stack.base}/v1/search", params={"q": "x"}).status_code == 401


def test_no_temporary_files_are_left_behind(stack: ServiceStack) -> None:
    # The API's own scratch directory holds its lock file (api/scratch.py) and nothing else.
    leftovers = [
        p
        for p in stack.work_dir.rglob("*")
        if p.is_file() and "office-slot" not in str(p) and p.name != "lock"
    ]
    assert leftovers == []


def test_the_text_of_a_document_deleted_while_it_is_read_is_404(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/text reads the document, then its pages: a DELETE between the two is answered as gone,
    not as a parsed document with no text whose next_page points back at itself."""
    from fastapi.testclient import TestClient

    from wcu_ai.api.app import create_app
    from wcu_ai.documents import store
    from wcu_ai.migrations import MigrationTool
    from wcu_ai.settings import Settings

    MigrationTool(Settings(DATABASE_URL=db_url)).run_up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        [document_id] = conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, page_count) "
            "VALUES ('race.pdf', 'application/pdf', 'pdf', sha256('race'::bytea), 10, 'parsed', 2) RETURNING id"
        ).fetchone()
        conn.execute(
            "INSERT INTO parsed_document_pages (document_id, page_no, text) VALUES (%s, 1, 'one'), (%s, 2, 'two')",
            (document_id, document_id),
        )
    page_range = store.page_range

    async def deleted_just_before(conn: Any, document: Any, **bounds: Any) -> list[dict[str, Any]]:
        with psycopg.connect(db_url, autocommit=True) as other:
            other.execute("DELETE FROM parsed_documents WHERE id = %s", (document,))
        return await page_range(conn, document, **bounds)

    monkeypatch.setattr(store, "page_range", deleted_just_before)
    key = "race-key-0123456789abcdef"
    settings = Settings(DATABASE_URL=db_url, api_keys=(key,), work_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        response = client.get(f"/v1/documents/{document_id}/text", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 404, response.text
    assert response.json() == {"detail": f"no document with id {document_id}"}
