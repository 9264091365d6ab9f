"""Hostile input against the real API: fuzzing from its OpenAPI schema, malformed and lying uploads,
SQL injection in every parameter, and secrets that must never reach a log line or an error body."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import API_KEY, fresh_database, run_cli, service_environ, skip_or_fail, wait_http
from tests.factories import make_docx, make_garbage, make_pdf, make_zip_bomb
from tests.reliability.harness import LocalPostgres, Procs

INJECTIONS = [
    "' OR '1'='1",
    "'; DROP TABLE ai_server_tasks; --",
    '"; DROP TABLE parsed_documents; --',
    "1; SELECT pg_sleep(30)--",
    "' UNION SELECT NULL, current_user --",
    "\\'; TRUNCATE ai_migrations; --",
    "%' AND 1=1 AND '%'='",
    "$$; DROP SCHEMA public CASCADE; $$",
    "queued' OR 'x'='x",
    "\x00",
    "a\x00'; DROP TABLE ai_server_tasks; --",
    "😀' --",
]


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The API on a migrated database, no runner: what is uploaded stays queued."""
    with service_stack(pg_server_url, tmp_path_factory.mktemp("hostile"), runner=False) as running:
        yield running


def _fingerprint(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url) as conn:
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
            " ORDER BY relname"
        ).fetchall()
        counts = {
            table: conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            for table in ("ai_server_tasks", "parsed_documents", "ai_migrations")
        }
        statuses = conn.execute("SELECT id, status, attempts FROM ai_server_tasks ORDER BY id").fetchall()
    return {"tables": tables, "counts": counts, "statuses": statuses}


def _get_operations(schema: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    return [
        (path, operation.get("parameters", []))
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method == "get" and path.startswith("/v1/")
    ]


def test_sql_injection_in_every_query_and_path_parameter_has_no_effect(
    stack: ServiceStack, tmp_path: Path
) -> None:
    stack.upload(make_pdf(tmp_path / "canary.pdf", ["canary document"]))
    before = _fingerprint(stack.db_url)
    schema = httpx.get(f"{stack.base}/openapi.json", timeout=10).json()
    operations = _get_operations(schema)
    assert {path for path, _ in operations} >= {
        "/v1/tasks",
        "/v1/tasks/{task_id}",
        "/v1/documents",
        "/v1/documents/{document_id}",
        "/v1/documents/{document_id}/text",
        "/v1/search",
    }
    sent = 0
    failures = []
    with httpx.Client(base_url=stack.base, headers=stack.auth, timeout=20) as client:
        for path, parameters in operations:
            path_params = [p["name"] for p in parameters if p["in"] == "path"]
            query_params = [p["name"] for p in parameters if p["in"] == "query"]
            for name, payload in itertools.product(path_params + query_params, INJECTIONS):
                url = path
                params: dict[str, str] = {}
                for other in path_params:
                    value = payload if other == name else "00000000-0000-0000-0000-000000000000"
                    url = url.replace("{" + other + "}", quote(value, safe=""))
                if name in query_params:
                    params[name] = payload
                if "q" in query_params and name != "q":
                    params["q"] = "canary"
                response = client.get(url, params=params)
                sent += 1
                # 503 is the service's deliberate "unavailable" answer; any other 5xx is a bug.
                broken = response.status_code >= 500 and response.status_code != 503
                # An injected filter that worked would list the canary's rows: a filter matches nothing.
                leaked = response.status_code == 200 and bool(response.json().get("items"))
                if broken or leaked:
                    failures.append((path, name, repr(payload), response.status_code, response.text[:200]))
    assert not failures, failures
    assert sent >= 15 * len(INJECTIONS)
    assert _fingerprint(stack.db_url) == before


def _multipart(boundary: str, *parts: bytes, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


def _file_part(filename: bytes, content: bytes, field: bytes = b"file") -> bytes:
    return (
        b'Content-Disposition: form-data; name="'
        + field
        + b'"; filename="'
        + filename
        + b'"\r\nContent-Type: application/pdf\r\n\r\n'
        + content
    )


@pytest.mark.parametrize(
    ("content_type", "body", "expected"),
    [
        ("multipart/form-data", b"anything", 415),  # no boundary
        ("application/pdf", b"%PDF-1.4 raw body", 415),
        ("multipart/form-data; boundary=XyZ", b"no boundary in here at all", 400),
        ("multipart/form-data; boundary=XyZ", b'--XyZ\r\nContent-Disposition: form-data; name="fi', 400),
        (
            "multipart/form-data; boundary=XyZ",
            _multipart("XyZ", b"X-Junk: " + b"a" * 20000 + b"\r\n\r\nx"),
            400,
        ),
        (
            "multipart/form-data; boundary=XyZ",
            _multipart("XyZ", _file_part(b"a.pdf", b"%PDF-1.4 one"), _file_part(b"b.pdf", b"%PDF-1.4 two")),
            400,
        ),
        (
            "multipart/form-data; boundary=XyZ",
            _multipart("XyZ", _file_part(b"a.pdf", b"", field=b"other")),
            400,
        ),
        ("multipart/form-data; boundary=XyZ", _multipart("XyZ", _file_part(b"empty.pdf", b"")), 422),
        ("multipart/form-data; boundary=XyZ", b"\x00\xff" * 5000, 400),
    ],
    ids=[
        "no-boundary",
        "not-multipart",
        "boundary-never-seen",
        "truncated-headers",
        "huge-part-header",
        "two-files",
        "no-file-field",
        "empty-file",
        "binary-garbage",
    ],
)
def test_malformed_multipart_is_a_4xx_with_a_reason(
    stack: ServiceStack, content_type: str, body: bytes, expected: int
) -> None:
    response = httpx.post(
        f"{stack.base}/v1/documents",
        content=body,
        headers={**stack.auth, "Content-Type": content_type},
        timeout=20,
    )
    assert response.status_code == expected, response.text
    assert response.json()["detail"]


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("../../../../etc/passwd.pdf", "passwd.pdf"),
        ("..\\..\\..\\Windows\\System32\\evil.pdf", "evil.pdf"),
        ("/etc/cron.d/job.pdf", "job.pdf"),
        ("a/b/../../../c.pdf", "c.pdf"),
        ("....//....//x.pdf", "x.pdf"),
        ("..", "document"),
        ("%2e%2e%2fenc.pdf", "%2e%2e%2fenc.pdf"),
        ("C:\\Users\\x\\..\\..\\boot.pdf", "boot.pdf"),
    ],
)
def test_path_traversal_file_names_keep_only_the_last_segment(
    stack: ServiceStack, tmp_path: Path, raw: str, stored: str
) -> None:
    pdf = make_pdf(tmp_path / "doc.pdf", [f"traversal case {raw!r}"])
    response = stack.upload(pdf, name=raw)
    assert response.status_code == 202, response.text
    document = stack.get(f"/v1/documents/{response.json()['document_id']}").json()
    assert document["filename"] == stored
    assert not Path("/etc/passwd.pdf").exists() and not Path("/etc/cron.d/job.pdf").exists()
    assert not list(stack.work_dir.glob("**/*.pdf")), "an upload left a file named after the client"


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def test_an_oversized_streamed_upload_is_refused_and_memory_stays_flat(stack: ServiceStack) -> None:
    """120 MiB sent chunked (no Content-Length) against the 50 MiB limit: 413, peak RSS flat."""
    chunk = b"%PDF-1.4\n" + b"0" * (1024 * 1024 - 9)
    boundary = "big"

    def body() -> Iterator[bytes]:
        yield b"--big\r\n" + _file_part(b"big.pdf", b"")
        for _ in range(120):
            yield chunk
        yield b"\r\n--big--\r\n"

    peak_before = _peak_rss_kib(stack.api.popen.pid)
    try:
        response = httpx.post(
            f"{stack.base}/v1/documents",
            content=body(),
            headers={**stack.auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
            timeout=60,
        )
    except httpx.TransportError:
        status = None  # the server may close the connection while the client is still sending
    else:
        status = response.status_code
        assert status == 413, response.text
    growth_mib = (_peak_rss_kib(stack.api.popen.pid) - peak_before) / 1024
    assert growth_mib < 20, f"peak RSS grew by {growth_mib:.0f} MiB (status {status})"
    assert not list(stack.work_dir.glob("uploads/**/upload-*")), "the refused upload left a scratch file"


def test_wrong_types_behind_right_extensions(stack: ServiceStack, tmp_path: Path) -> None:
    for name in ("garbage.pdf", "garbage.docx"):
        response = stack.upload(make_garbage(tmp_path / name, seed=len(name)), name=name)
        assert response.status_code == 415, response.text
    png = tmp_path / "image.pdf"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 512)
    assert stack.upload(png).status_code == 415
    # The type is read from the bytes: a PDF named .docx is a PDF, a DOCX named .pdf a DOCX.
    pdf_named_docx = stack.upload(make_pdf(tmp_path / "really-a-pdf.docx", ["pdf inside"]))
    assert pdf_named_docx.status_code == 202
    assert stack.get(f"/v1/documents/{pdf_named_docx.json()['document_id']}").json()["kind"] == "pdf"
    docx_named_pdf = stack.upload(make_docx(tmp_path / "really-a-docx.pdf", ["docx inside"]))
    assert docx_named_pdf.status_code == 202
    assert stack.get(f"/v1/documents/{docx_named_pdf.json()['document_id']}").json()["kind"] == "docx"


def test_bombs_and_huge_pdfs_fail_with_a_reason_and_the_runner_stays_up(
    pg_server_url: str, tmp_path: Path
) -> None:
    from tests.conftest import missing_tools_or_fail

    missing_tools_or_fail()
    env = {"WCU_DOCX_MAX_UNCOMPRESSED_BYTES": str(8 * 1024 * 1024), "WCU_DOC_MAX_PAGES": "40"}
    with service_stack(pg_server_url, tmp_path, **env) as stack:
        bomb = stack.upload(make_zip_bomb(tmp_path / "bomb.docx", 64 * 1024 * 1024)).json()
        many = stack.upload(make_pdf(tmp_path / "many.pdf", [f"page {i}" for i in range(60)])).json()
        nested = stack.upload(_deeply_nested_pdf(tmp_path / "nested.pdf", depth=100_000)).json()
        for upload, reason in ((bomb, "WCU_DOCX_MAX_UNCOMPRESSED_BYTES"), (many, "WCU_DOC_MAX_PAGES")):
            document = stack.wait_document(upload["document_id"])
            assert document["status"] == "failed" and reason in document["failure_reason"], document
            assert "split the document" in document["failure_reason"] or reason != "WCU_DOC_MAX_PAGES"
        document = stack.wait_document(nested["document_id"])
        assert document["status"] in ("parsed", "failed"), document
        fine = stack.upload(make_pdf(tmp_path / "fine.pdf", ["still working"])).json()
        assert stack.wait_document(fine["document_id"])["status"] == "parsed"


def _deeply_nested_pdf(path: Path, depth: int) -> Path:
    """A one-page PDF whose page dictionary carries an array nested `depth` levels deep."""
    make_pdf(path, ["nested"])
    data = path.read_bytes()
    nested = b"[" * depth + b"]" * depth
    # An extra key in the page object; the xref offsets after it shift, which poppler repairs.
    data = data.replace(b"/Type /Page /Parent 2 0 R", b"/Type /Page /Deep " + nested + b" /Parent 2 0 R", 1)
    path.write_bytes(data)
    return path


# -- schemathesis -------------------------------------------------------------------------------


def _schemathesis() -> list[str]:
    script = Path(sys.executable).with_name("st")
    if not script.exists():
        skip_or_fail("schemathesis is not installed (the dev group has it: uv sync)")
    return [str(script)]


@pytest.mark.parametrize("auth", [True, False], ids=["with-key", "without-key"])
def test_schemathesis_finds_no_5xx_and_responses_match_the_schema(
    stack: ServiceStack, tmp_path: Path, auth: bool
) -> None:
    # 503 is the service's deliberate "unavailable" answer (database down, a feature not configured),
    # always with a JSON reason; every other 5xx fails the run.
    config = tmp_path / "schemathesis.toml"
    config.write_text('[checks.not_a_server_error]\nexpected-statuses = ["2XX", "3XX", "4XX", "503"]\n')
    argv = [
        *_schemathesis(),
        "--config-file",
        str(config),
        "run",
        f"{stack.base}/openapi.json",
        "--checks",
        "not_a_server_error,response_schema_conformance,content_type_conformance",
        "--max-examples",
        "10" if auth else "4",  # without a key every operation is a 401 before any logic
        "--workers",
        "2",
        "--seed",
        "6",
        "--request-timeout",
        "20",
        "--phases",
        "examples,coverage,fuzzing",
        "--suppress-health-check",
        "all",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    if auth:
        argv += ["--header", f"Authorization: Bearer {API_KEY}"]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false", "HOME": str(tmp_path)}
    result = subprocess.run(
        argv, capture_output=True, text=True, timeout=240, env=env, check=False, cwd=tmp_path
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "passed" in output.lower()
    assert "Exception in ASGI application" not in stack.api.output()


# -- secrets -------------------------------------------------------------------------------------


SECOND_KEY = "second-key-" + "k" * 20


# The pgserver wheel's PostgreSQL on TCP: not in the Nix sandbox (no pgserver there, no TCP); .ci/run runs it.
@pytest.mark.embedded_postgres
def test_secrets_never_appear_in_logs_or_error_bodies(own_postgres: LocalPostgres, tmp_path: Path) -> None:
    """The password of a password-protected role (DATABASE_URL over TCP) and both API keys."""
    secrets = [own_postgres.password, API_KEY, SECOND_KEY]
    bodies: list[str] = []
    with fresh_database(own_postgres.url()) as db_url:
        assert own_postgres.password in db_url
        env = service_environ(db_url, tmp_path, WCU_API_KEYS=f"{API_KEY},{SECOND_KEY}")
        procs = Procs(env, tmp_path / "logs")
        try:
            runner = procs.start("runner")
            runner.wait_for("runner.leader", timeout=60)
            api = procs.start("api")
            base = f"http://127.0.0.1:{env['WCU_API_PORT']}"
            wait_http(f"{base}/health/ready")
            with httpx.Client(base_url=base, timeout=20) as client:
                for headers in (
                    {},
                    {"Authorization": f"Bearer {API_KEY}x"},
                    {"Authorization": f"Basic {API_KEY}"},
                    {"Authorization": f"Bearer {SECOND_KEY[:-1]}"},
                ):
                    response = client.get("/v1/tasks", headers=headers)
                    assert response.status_code == 401
                    bodies.append(response.text)
                auth = {"Authorization": f"Bearer {SECOND_KEY}"}
                for path in ("/v1/tasks/not-a-uuid", "/v1/documents?cursor=%27", "/v1/search?q=", "/nope"):
                    bodies.append(client.get(path, headers=auth).text)
                garbage = make_garbage(tmp_path / "x.pdf")
                bodies.append(
                    client.post(
                        "/v1/documents", headers=auth, files={"file": ("x.pdf", garbage.read_bytes())}
                    ).text
                )
                bodies.append(client.post("/v1/documents", headers=auth, content=b"--x\r\n").text)
                # A document that fails in the runner: its reason is logged and stored.
                bad = make_pdf(tmp_path / "bad.pdf", ["cut short"])
                bad.write_bytes(bad.read_bytes()[:200])
                bodies.append(
                    client.post(
                        "/v1/documents", headers=auth, files={"file": ("bad.pdf", bad.read_bytes())}
                    ).text
                )
                runner.wait_for("task.failed", timeout=60)
            # (The outage's log lines are checked for the password in test_faults' restart test.)
            # The CLI with a wrong password and with the right one against a stopped server.
            wrong = db_url.replace(own_postgres.password, own_postgres.password[::-1])
            secrets.append(own_postgres.password[::-1])
            cli = run_cli("migrate", "status", env={**env, "DATABASE_URL": wrong})
            assert cli.returncode == 1
            bodies.append(cli.stdout + cli.stderr)
            for proc in (api, runner):
                proc.signal(signal.SIGTERM)
                assert proc.wait(60) == 0
            logs = [proc.output() for proc in procs.all]
        finally:
            procs.close()
    for secret in secrets:
        for text in [*logs, *bodies]:
            assert secret not in text
