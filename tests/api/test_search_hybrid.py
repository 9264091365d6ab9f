"""Hybrid search: full-text fused with pgvector similarity when an embedder is configured."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import ServiceStack, service_stack
from tests.conftest import missing_tools_or_fail
from tests.factories import make_pdf

pytestmark = pytest.mark.documents
SPEC = "python:tests.fake_embedder:make"


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    missing_tools_or_fail()
    # The console script does not put the working directory on sys.path; the test double lives in tests/.
    root = str(Path(__file__).resolve().parents[2])
    with service_stack(
        pg_server_url, tmp_path_factory.mktemp("hybrid"), WCU_EMBEDDER=SPEC, PYTHONPATH=root
    ) as s:
        yield s


def test_chunks_are_embedded_and_search_fuses_both_rankings(stack: ServiceStack, tmp_path: Path) -> None:
    marker = uuid.uuid4().hex[:8]
    pages = [f"Alpha{marker} lighthouse keepers log the weather.", f"Beta{marker} orchards need bees."]
    document_id = stack.upload(make_pdf(tmp_path / "h.pdf", pages)).json()["document_id"]
    assert stack.wait_document(document_id)["status"] == "parsed"
    with psycopg.connect(stack.db_url) as conn:
        rows = conn.execute(
            "SELECT embedding_model, embedding_dims FROM parsed_document_chunks WHERE document_id = %s",
            (document_id,),
        ).fetchall()
    assert rows and set(rows) == {(SPEC, 64)}

    # Every word must match for full-text search; the vector ranking still finds the page.
    query = f"alpha{marker} lighthouse unrelatedword{marker}"
    body = stack.get("/v1/search", q=query).json()
    assert body["mode"] == "hybrid"
    assert [(hit["document_id"], hit["page"]) for hit in body["results"][:1]] == [(document_id, 1)]
    with psycopg.connect(stack.db_url) as conn:
        fulltext = conn.execute(
            "SELECT count(*) FROM parsed_document_chunks WHERE tsv @@ websearch_to_tsquery('english', %s)",
            (query,),
        ).fetchone()
    assert fulltext == (0,)
