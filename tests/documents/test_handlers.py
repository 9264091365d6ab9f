"""The runner's document parser: its counts (documents parsed and failed by kind and reason, scraped
from the real runner) and the LibreOffice sandbox it reports at start."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import service_stack
from tests.conftest import Proc, free_port
from tests.factories import make_docx, make_pdf
from tests.scrape import scrape
from wcu_ai.documents.handlers import DocumentParser, kind_label
from wcu_ai.documents.office import probe_private_network
from wcu_ai.settings import Settings
from wcu_ai.task_runner.metrics import RunnerMetrics


def test_kind_label_reads_the_magic_bytes() -> None:
    assert kind_label(b"%PDF-1.7\n%\xe2\xe3") == "pdf"
    assert kind_label(b"\n\n%PDF-1.4") == "pdf"  # readers look for it in the first 1024 bytes
    assert kind_label(b"PK\x03\x04\x14\x00") == "docx"
    assert kind_label(b"GIF89a") == "other"
    assert kind_label(b"") == "other"


def test_the_parser_tells_its_converters_restarts_to_the_metrics(tmp_path: Path) -> None:
    metrics = RunnerMetrics()
    parser = DocumentParser(Settings(work_dir=tmp_path / "work"), metrics=metrics)
    try:
        converter = parser.converter(0)
        assert converter.on_restart == metrics.libreoffice_restarted
    finally:
        parser.close()


@pytest.mark.documents
def test_parsed_and_failed_documents_are_counted_by_kind_and_reason(
    pg_server_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        "WCU_RUNNER_METRICS_HOST": "127.0.0.1",
        "WCU_RUNNER_METRICS_PORT": str(port),
        "WCU_DOC_MAX_PAGES": "1",
    }
    marker = uuid.uuid4().hex[:8]
    with service_stack(pg_server_url, tmp_path, **env) as stack:
        url = f"http://127.0.0.1:{port}/metrics"
        before = scrape(url)
        assert before.value("wcu_documents_parsed_total", kind="pdf") == 0
        uploads = {
            "parsed-pdf": make_pdf(tmp_path / "one.pdf", [f"One page {marker}"]),
            "parsed-docx": make_docx(tmp_path / "one.docx", [f"One docx page {marker}"]),
            "limit": make_pdf(tmp_path / "two.pdf", [f"Page one {marker}", "Page two"]),
            "encrypted": make_pdf(tmp_path / "locked.pdf", [f"Secret {marker}"], user_password="pw"),
        }
        for name, path in uploads.items():
            response = stack.upload(path)
            assert response.status_code == 202, (name, response.text)
            document = stack.wait_document(response.json()["document_id"])
            assert document["status"] == ("parsed" if name.startswith("parsed") else "failed"), document
        after = scrape(url)
        assert after.value("wcu_documents_parsed_total", kind="pdf") == 1
        assert after.value("wcu_documents_parsed_total", kind="docx") == 1
        assert after.value("wcu_documents_failed_total", kind="pdf", reason="limit") == 1
        assert after.value("wcu_documents_failed_total", kind="pdf", reason="encrypted") == 1
        failed = sum(
            after.get("wcu_documents_failed_total", **labels)
            for labels in after.labels_of("wcu_documents_failed_total")
        )
        assert failed == 2


@pytest.mark.documents
def test_the_runner_says_at_start_whether_libreoffice_gets_a_private_network(
    start: Callable[..., Proc],
) -> None:
    runner = start("runner")
    event = runner.wait_for("office.private_network", timeout=60)
    probe = probe_private_network()
    if probe.available:
        assert (event["state"], event["level"]) == ("on", "info"), event
    else:  # degraded, and visibly so
        assert (event["state"], event["level"]) == ("unavailable", "warning"), event
        assert event["reason"]


@pytest.mark.documents
def test_where_it_cannot_be_had_the_runner_warns_or_with_required_logs_an_error(
    start: Callable[..., Proc], path_without_unshare: str
) -> None:
    auto = start("runner", PATH=path_without_unshare)
    event = auto.wait_for("office.private_network", timeout=60)
    assert (event["state"], event["level"]) == ("unavailable", "warning"), event
    assert "unshare" in event["reason"]
    auto.stop()
    required = start("runner", PATH=path_without_unshare, WCU_OFFICE_PRIVATE_NETWORK="required")
    event = required.wait_for("office.private_network", timeout=60)
    assert (event["state"], event["level"]) == ("unavailable", "error"), event
    assert "WCU_OFFICE_PRIVATE_NETWORK=required" in event["msg"]
