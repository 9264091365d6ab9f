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
from tests.factories import make_docx, make_pdf
from tests.pdf_bytes import dense_page_pdf, repeated_text_pdf, scanned_pdf, shared_content_pdf, text_image

pytestmark = pytest.mark.documents

FRENCH = (
    "Le comité a examiné les chiffres trimestriels et a approuvé le budget révisé pour l'année "
    "prochaine. Les chevaux du haras {marker} couraient dans les prés, et nous avons discuté de la "
    "stratégie avec les membres du conseil."
)


RESPONSE_CHARS = 1000
LIMITS = {
    "WCU_DOC_MAX_TEXT_CHARS": "200000",
    "WCU_DOC_MAX_PAGE_CHARS": "20000",
    "WCU_DOC_MAX_CHUNKS": "200",
    "WCU_POPPLER_MAX_MEMORY_BYTES": str(128 * 1024 * 1024),
    "WCU_OCR_MAX_PAGES": "3",
    "WCU_TEXT_RESPONSE_MAX_CHARS": str(RESPONSE_CHARS),
}


@pytest.fixture(scope="module")
def stack(pg_server_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    missing_tools_or_fail()
    env = {"WCU_TASK_RETRY_BASE_SECONDS": "0", **LIMITS}
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


def failed(stack: ServiceStack, path: Path) -> str:
    response = upload(stack, path)
    assert response.status_code == 202, response.text
    document = stack.wait_document(response.json()["document_id"])
    assert document["status"] == "failed", document
    task = stack.get(f"/v1/tasks/{response.json()['task_id']}").json()
    assert (task["status"], task["last_error"]) == ("failed", document["failure_reason"])
    return str(document["failure_reason"])


def test_hostile_pdfs_fail_naming_the_limit_and_the_runner_goes_on(
    stack: ServiceStack, tmp_path: Path
) -> None:
    """Regression (issue 10, item 2): text, pages' text, chunks and poppler's memory were unbounded."""
    shared = shared_content_pdf(
        tmp_path / "shared.pdf", pages=2000, line="Lorem ipsum dolor sit amet " * 3, lines=90
    )
    assert "WCU_DOC_MAX_TEXT_CHARS" in failed(stack, shared)
    dense = failed(stack, dense_page_pdf(tmp_path / "dense.pdf"))
    assert "WCU_DOC_MAX_PAGE_CHARS" in dense and "split that page" in dense
    assert "WCU_POPPLER_MAX_MEMORY_BYTES" in failed(
        stack, repeated_text_pdf(tmp_path / "repeat.pdf", repeats=40_000)
    )
    many = make_pdf(tmp_path / "many.pdf", [f"Page {n} of {uuid.uuid4().hex}" for n in range(250)])
    assert "WCU_DOC_MAX_CHUNKS" in failed(stack, many)
    assert stack.runner is not None and stack.runner.popen.poll() is None
    fine = parsed(stack, make_pdf(tmp_path / "fine.pdf", [f"Still working {uuid.uuid4().hex}"]))
    assert fine["page_count"] == 1


def test_scanned_pages_are_ocred_flagged_and_searchable(stack: ServiceStack, tmp_path: Path) -> None:
    """Regression (issue 10, item 11): an image-only page parsed "successfully" with no text."""
    # Page 1 shows the same image under a text layer: kept, not OCRed. Only this test says "glaciers".
    layer = f"This page has a text layer {uuid.uuid4().hex}."
    image = text_image("Glaciers retreat every summer\nin the northern valleys")
    pdf = scanned_pdf(tmp_path / "scan.pdf", [image, image], encoding="ccitt", text_layers=[layer, None])
    document = parsed(stack, pdf)
    text = stack.get(f"/v1/documents/{document['id']}/text").json()
    assert [(p["page"], p["ocr"]) for p in text["pages"]] == [(1, False), (2, True)]
    assert text["pages"][0]["text"] == layer
    assert {"glaciers", "retreat", "summer", "northern"} <= set(text["pages"][1]["text"].lower().split())
    hits = stack.get("/v1/search", q="glaciers retreat").json()["results"]
    assert [(h["document_id"], h["page"]) for h in hits] == [(document["id"], 2)]


def test_snippets_are_plain_text_with_highlight_offsets(stack: ServiceStack, tmp_path: Path) -> None:
    """Regression (issue 10, item 4): <img onerror> came back live next to ts_headline's <b>."""
    # Letters only: the text-search parser splits a hex string like "59e2bfa9" into several words.
    marker = uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))
    page = f"Zeppelin {marker} report <img src=x onerror=alert(1)> and the hangar."
    document = parsed(stack, make_pdf(tmp_path / "xss.pdf", [page]))
    [hit] = stack.get("/v1/search", q=f"zeppelin {marker}").json()["results"]
    assert hit["document_id"] == document["id"]
    assert "<b>" not in hit["snippet"] and "<img src=x onerror=alert(1)>" in hit["snippet"]
    assert [hit["snippet"][a:b].lower() for a, b in hit["highlights"]] == ["zeppelin", marker]


def _letters(n: int) -> str:
    # Letters only: the text-search parser splits a hex string like "59e2bfa9" into several words.
    return uuid.uuid4().hex[:n].translate(str.maketrans("0123456789", "ghijklmnop"))


def test_words_in_angle_brackets_are_found_and_snippets_keep_the_brackets(
    stack: ServiceStack, tmp_path: Path
) -> None:
    """Regression: PostgreSQL's parser took "<...>" for an HTML tag: its words were never indexed."""
    marker = _letters(8)
    page = f"Note {marker}: List<Capybara{marker}> when x<y and y>z, then <script>alert(1)</script> runs."
    document = parsed(stack, make_pdf(tmp_path / "brackets.pdf", [page]))
    for word in (f"capybara{marker}", "script", "alert"):
        hits = stack.get("/v1/search", q=f"{word} {marker}").json()["results"]
        assert [h["document_id"] for h in hits] == [document["id"]], word
    [hit] = stack.get("/v1/search", q=f"capybara{marker} alert").json()["results"]
    assert f"List<Capybara{marker}>" in hit["snippet"] and "<script>alert(1)</script>" in hit["snippet"]
    assert hit["snippet"] in hit["text"]  # the chunk's own characters, < and > included
    assert [hit["snippet"][a:b].lower() for a, b in hit["highlights"]] == [f"capybara{marker}", "alert"]
    served = stack.get(f"/v1/documents/{document['id']}/text").json()["pages"][0]["text"]
    assert " ".join(served.split()) == page


def test_right_to_left_words_are_found_without_bidi_controls(stack: ServiceStack, tmp_path: Path) -> None:
    """Regression: pdftotext wraps right-to-left runs in U+202B..U+202C; the mark stuck to the last
    word, so "بالعالم" of "مرحبا بالعالم" was not found."""
    marker = _letters(8)
    # LibreOffice writes the PDF the runner reads, with the right-to-left runs poppler marks.
    docx = make_docx(tmp_path / "rtl.docx", [f"Greeting {marker}: مرحبا بالعالم"])
    document = parsed(stack, docx)
    hits = stack.get("/v1/search", q=f"بالعالم {marker}").json()["results"]
    assert [h["document_id"] for h in hits] == [document["id"]]
    text = stack.get(f"/v1/documents/{document['id']}/text").json()["text"]
    assert {"مرحبا", "بالعالم", marker} <= set(text.replace(":", " ").split())
    assert not set(text) & set("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def test_text_comes_in_bounded_ranges(stack: ServiceStack, tmp_path: Path) -> None:
    """Regression (issue 10, item 2): one /text response carried the whole text, 774 MB of it."""
    pages = [f"Page {n} {uuid.uuid4().hex}. " + "Lorem ipsum dolor sit amet. " * 12 for n in range(1, 8)]
    document = parsed(stack, make_pdf(tmp_path / "long.pdf", pages))
    path = f"/v1/documents/{document['id']}/text"
    seen: list[int] = []
    responses = 0
    params: dict[str, Any] = {}
    for _ in range(len(pages)):  # bounded: every response holds at least one page
        body = stack.get(path, **params).json()
        responses += 1
        returned = [p["page"] for p in body["pages"]]
        assert sum(len(p["text"]) for p in body["pages"]) <= RESPONSE_CHARS
        assert (body["from_page"], body["to_page"], body["page_count"]) == (returned[0], returned[-1], 7)
        assert body["text"] == "\n\n".join(p["text"] for p in body["pages"])
        seen += returned
        if body["next_page"] is None:
            break
        params = {"from_page": body["next_page"]}
    assert seen == list(range(1, 8))
    assert responses > 1  # 7 pages of ~400 characters do not fit in 1,000
    third = stack.get(path, from_page=3, to_page=3).json()
    assert ([p["page"] for p in third["pages"]], third["next_page"]) == ([3], None)
    assert " ".join(third["text"].split()) == pages[2].strip()
    tail = stack.get(path, from_page=6, to_page=99).json()
    assert ([p["page"] for p in tail["pages"]], tail["next_page"]) == ([6, 7], None)
    last = stack.get(path, from_page=7, to_page=300).json()
    assert ([p["page"] for p in last["pages"]], last["from_page"], last["to_page"]) == ([7], 7, 7)
    # Past the last page was a 200 whose to_page came before its from_page (8..7, 200..199).
    for params in ({"from_page": 8}, {"from_page": 200, "to_page": 300}):
        beyond = stack.get(path, **params)
        assert beyond.status_code == 422, beyond.text
        [error] = beyond.json()["detail"]
        assert error["loc"] == ["query", "from_page"] and "7 pages" in error["msg"]
    backwards = stack.get(path, from_page=3, to_page=2)
    assert backwards.status_code == 422
    assert backwards.json()["detail"][0]["loc"] == ["query", "to_page"]
