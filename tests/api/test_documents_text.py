"""What a document's text becomes, through the real API and runner: its language, its limits, its
OCR, and how /v1/documents/{id}/text hands it out."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import missing_tools_or_fail
from tests.factories import make_pdf

pytestmark = pytest.mark.documents

FRENCH = (
    "Le comité a examiné les chiffres trimestriels et a approuvé le budget révisé pour l'année "
    "prochaine. Les chevaux du haras {marker} couraient dans les prés, et nous avons discuté de la "
    "stratégie avec les membres du conseil."
)


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    missing_tools_or_fail()
    env = {"WCU_TASK_RETRY_BASE_SECONDS": "0"}
    with service_stack(pg_server_url, tmp_path_factory.mktemp("text"), **env) as running:
        yield running


def upload(stack: ServiceStack, path: Path, **params: str) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            f"{stack.base}/v1/documents",
            headers=stack.auth,
            params=params,
            files={"file": (path.name, f, "application/pdf")},
            timeout=30,
        )


def parsed(stack: ServiceStack, path: Path, **params: str) -> dict[str, Any]:
    response = upload(stack, path, **params)
    assert response.status_code == 202, response.text
    document = stack.wait_document(response.json()["document_id"])
    assert document["status"] == "parsed", document
    return document


def test_a_french_document_is_detected_as_french_and_found_by_french_stems(
    stack: ServiceStack, tmp_path: Path
) -> None:
    """Regression (issue 10, item 13): every document was stemmed as English."""
    marker = uuid.uuid4().hex[:8]
    document = parsed(stack, make_pdf(tmp_path / "rapport.pdf", [FRENCH.format(marker=marker)]))
    assert document["text_search_config"] == "french"
    # 'cheval' is the French stem of 'chevaux': an English-stemmed index does not have it.
    hits = stack.get("/v1/search", q=f"cheval {marker}").json()["results"]
    assert [h["document_id"] for h in hits] == [document["id"]]


def test_the_language_given_at_upload_wins_and_an_unknown_one_is_refused(
    stack: ServiceStack, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    document = parsed(
        stack, make_pdf(tmp_path / "as-simple.pdf", [FRENCH.format(marker=marker)]), language="simple"
    )
    assert document["text_search_config"] == "simple"
    assert stack.get("/v1/search", q=f"cheval {marker}").json()["results"] == []  # no stemming
    assert len(stack.get("/v1/search", q=f"chevaux {marker}").json()["results"]) == 1
    refused = upload(stack, make_pdf(tmp_path / "x.pdf", ["x"]), language="klingon")
    assert refused.status_code == 422
    assert "language" in refused.text
