"""Search ranking: reciprocal rank fusion, plain-text snippets with highlight offsets, and the
queries' use of their indexes."""

from __future__ import annotations

import asyncio
import hashlib
import math
import uuid
from typing import Any

import psycopg
import pytest

from wcu_ai.database import open_pool
from wcu_ai.documents.search import fuse, highlighted, restored, search_hybrid, search_text, vector_query
from wcu_ai.documents.store import Q
from wcu_ai.documents.textsearch import TEXT_SEARCH_CONFIGS
from wcu_ai.migrations import MigrationTool
from wcu_ai.settings import Settings


def row(doc: uuid.UUID, ordinal: int) -> dict[str, Any]:
    return {"document_id": doc, "ordinal": ordinal, "page_no": 1, "snippet": f"s{ordinal}", "text": "t"}


def test_fuse_ranks_what_both_rankings_agree_on_first() -> None:
    doc = uuid.uuid4()
    text_ranking = [row(doc, 1), row(doc, 2), row(doc, 3)]
    vector_ranking = [row(doc, 2), row(doc, 3), row(doc, 9)]
    fused = fuse([text_ranking, vector_ranking], limit=3)
    assert [p.snippet for p in fused] == ["s2", "s3", "s1"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_highlighted_turns_marks_into_offsets() -> None:
    assert highlighted("the \x02quarterly\x03 \x02revenues\x03 grew") == (
        "the quarterly revenues grew",
        ((4, 13), (14, 22)),
    )
    assert highlighted("no marks <b>at all</b>") == ("no marks <b>at all</b>", ())
    # Offsets count code points, not bytes; a stray or empty mark gives no span.
    assert highlighted("é\x02ß\x03 \x03x\x02\x03 \x02") == ("éß x ", ((1, 2),))


def _insert_chunk(db_url: str, text: str) -> uuid.UUID:
    with psycopg.connect(db_url, autocommit=True) as conn:
        doc = conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status) "
            "VALUES ('h.pdf', 'application/pdf', 'pdf', %s, 1, 'parsed') RETURNING id",
            (hashlib.sha256(text.encode()).digest(),),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text) "
            "VALUES (%s, 1, 0, 0, %s, %s)",
            (doc, len(text), text),
        )
    return doc


def test_snippets_are_plain_text_with_offsets_never_live_markup(settings: Settings, db_url: str) -> None:
    """Regression (issue 10, item 4): ts_headline's <b> tags came back around the document's own HTML."""
    MigrationTool(settings).run_up()
    # STX/ETX in the text itself: what the headline marks matches with; they must not make a span.
    text = "Quarterly zeppelin report <img src=x onerror=alert(1)> and \x02zeppelins\x03 end."
    doc = _insert_chunk(db_url, text)

    async def body() -> list[Any]:
        async with open_pool(settings) as pool, pool.connection() as conn:
            return await search_text(conn, "zeppelin", limit=5)

    [passage] = asyncio.run(body())
    assert passage.document_id == doc
    assert "<img src=x onerror=alert(1)>" in passage.snippet  # the document's text, as text
    assert "<b>" not in passage.snippet
    assert "\x02" not in passage.snippet and "\x03" not in passage.snippet
    assert [passage.snippet[start:end] for start, end in passage.highlights] == ["zeppelin", "zeppelins"]


def test_restored_puts_the_chunks_own_characters_back() -> None:
    text = "Use List<Capybara> when x<y and y>z."
    assert restored("List Capybara  when x y", text) == "List<Capybara> when x<y"
    assert restored("not in it", text) == "not in it"
    assert restored("a b", "a\x02b") == "a b"  # the marks' own characters never come back


def test_words_in_angle_brackets_are_indexed_and_kept_in_snippets(settings: Settings, db_url: str) -> None:
    """Regression: the text-search parser dropped "<...>" as an HTML tag, its words unindexed."""
    MigrationTool(settings).run_up()
    text = "Generic List<Capybara>\n when x<y and  y>z,\n\nthen <script>alert(1)</script> runs."
    doc = _insert_chunk(db_url, text)
    for query in ("capybara", "script", "alert", "y"):
        assert [p.document_id for p in _search(settings, query)] == [doc], query
    [passage] = _search(settings, "capybara alert")
    assert passage.snippet in text and "List<Capybara>" in passage.snippet
    assert [passage.snippet[a:b] for a, b in passage.highlights] == ["Capybara", "alert"]


def _search(settings: Settings, query: str) -> list[Any]:
    async def body() -> list[Any]:
        async with open_pool(settings) as pool, pool.connection() as conn:
            return await search_text(conn, query, limit=10)

    return asyncio.run(body())


def _insert_document(db_url: str, config: str, texts: list[str]) -> uuid.UUID:
    with psycopg.connect(db_url, autocommit=True) as conn:
        doc = conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, "
            "text_search_config) VALUES ('l.pdf', 'application/pdf', 'pdf', %s, 1, 'parsed', %s) RETURNING id",
            (hashlib.sha256(repr(texts).encode()).digest(), config),
        ).fetchone()[0]
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text, "
                "text_search_config) VALUES (%s, 1, %s, 0, 1, %s, %s)",
                [(doc, i, text, config) for i, text in enumerate(texts)],
            )
    return doc


def test_each_document_is_searched_in_its_own_language(settings: Settings, db_url: str) -> None:
    """Regression (issue 10, item 13): 'english' was hard-coded, so other languages stemmed wrongly."""
    MigrationTool(settings).run_up()
    french = _insert_document(db_url, "french", ["Les chevaux couraient dans les prés du village."])
    english = _insert_document(db_url, "english", ["The horses were running in the meadows."])
    codes = _insert_document(db_url, "simple", ["Part numbers: the X-17 and the zx81 were shipped."])
    # 'cheval' is the French stem of 'chevaux': only French stemming finds it.
    assert [p.document_id for p in _search(settings, "cheval")] == [french]
    assert [p.document_id for p in _search(settings, "horse")] == [english]
    # 'the' is an English stop word, yet a word like any other in a 'simple' document.
    assert [p.document_id for p in _search(settings, "the zx81")] == [codes]
    [hit] = _search(settings, "chevaux")
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["chevaux"]


@pytest.fixture
def many_chunks(settings: Settings, db_url: str) -> None:
    """2,000 chunks in 100 parsed documents over four configurations, made by SQL."""
    MigrationTool(settings).run_up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status, "
            "text_search_config) SELECT 'g.pdf', 'application/pdf', 'pdf', sha256(d::text::bytea), 1, "
            "'parsed', (ARRAY['english', 'french', 'german', 'simple'])[d % 4 + 1] FROM generate_series(1, 100) d"
        )
        conn.execute(
            "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text, "
            "text_search_config) SELECT d.id, 1, n, 0, 1, 'routine entry ' || n || ' about budgets and plans', "
            "d.text_search_config FROM parsed_documents d, generate_series(1, 20) n"
        )
        conn.execute("ANALYZE parsed_documents")
        conn.execute("ANALYZE parsed_document_chunks")


def _text_plan(db_url: str, query: Any) -> str:
    with psycopg.connect(db_url) as conn:
        conn.execute("SET enable_seqscan = off")  # as for the vector index: a usable index is then used
        rows = conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + query,
            {"q": "zeppelin", "limit": 10, "configs": list(TEXT_SEARCH_CONFIGS)},
        ).fetchall()
    return "\n".join(r[0] for r in rows)


def test_the_full_text_query_uses_the_gin_index(many_chunks: None, db_url: str) -> None:
    plan = _text_plan(db_url, psycopg.sql.SQL(Q["search_text"]))
    assert "Bitmap Index Scan on parsed_document_chunks_tsv_idx" in plan, plan


def test_a_query_parsed_per_row_cannot_use_the_gin_index(many_chunks: None, db_url: str) -> None:
    """The control: parsing the query with each row's configuration leaves the index unusable."""
    per_row = psycopg.sql.SQL(
        "SELECT c.id FROM parsed_document_chunks c WHERE cardinality(%(configs)s::text[]) > 0 AND "
        "c.tsv @@ websearch_to_tsquery(c.text_search_config::regconfig, %(q)s) LIMIT %(limit)s"
    )
    assert "parsed_document_chunks_tsv_idx" not in _text_plan(db_url, per_row)


DIMS = 3
MODEL = "test:3d"
STEP = 0.0015  # radians between neighbouring chunks' embeddings; 2,000 chunks span 3 radians


def _embedding(k: int) -> str:
    return str([math.cos(k * STEP), math.sin(k * STEP), 0.0])


@pytest.fixture
def chunks(settings: Settings, db_url: str) -> None:
    """100 parsed documents of 20 embedded chunks each, and a 3-dimension HNSW index like migration 0002's.

    Chunk k of the corpus has the embedding [cos a, sin a, 0] with a = k * STEP radians; its text is
    "chunk k". Neighbours are 1 - cos(STEP) ~ 1e-6 apart in cosine distance: well above float32's
    resolution near 1, which made [1, k/2000, 0] neighbours (~1e-7 apart) tie or swap now and then.
    """
    MigrationTool(settings).run_up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            f"CREATE INDEX chunks_embedding_{DIMS}_idx ON parsed_document_chunks "
            f"USING hnsw ((embedding::vector({DIMS})) vector_cosine_ops) WHERE embedding_dims = {DIMS}"
        )
        for d in range(100):
            doc = conn.execute(
                "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status) "
                "VALUES ('v.pdf', 'application/pdf', 'pdf', %s, 1, 'parsed') RETURNING id",
                (hashlib.sha256(str(d).encode()).digest(),),
            ).fetchone()[0]
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, "
                    "text, embedding, embedding_model) VALUES (%s, 1, %s, 0, 1, %s, %s::vector, %s)",
                    [(doc, i, f"chunk {d * 20 + i}", _embedding(d * 20 + i), MODEL) for i in range(20)],
                )
        conn.execute("ANALYZE parsed_documents")
        conn.execute("ANALYZE parsed_document_chunks")


def plan(db_url: str, query: Any) -> str:
    with psycopg.connect(db_url) as conn:
        conn.execute("SET enable_seqscan = off")
        rows = conn.execute(
            psycopg.sql.SQL("EXPLAIN ") + query, {"embedding": "[1, 0.5, 0]", "model": MODEL, "limit": 5}
        ).fetchall()
    return "\n".join(r[0] for r in rows)


def test_the_vector_query_uses_the_per_dimension_hnsw_index(chunks: None, db_url: str) -> None:
    assert f"chunks_embedding_{DIMS}_idx" in plan(db_url, vector_query(DIMS))


def test_without_the_literal_dimension_the_index_is_not_used(chunks: None, db_url: str) -> None:
    """The control: the index expression must be repeated exactly, dimension included."""
    untyped = psycopg.sql.SQL(
        "SELECT c.id FROM parsed_document_chunks c WHERE c.embedding_dims = 3 AND c.embedding_model = %(model)s "
        "ORDER BY c.embedding <=> %(embedding)s::vector LIMIT %(limit)s"
    )
    assert f"chunks_embedding_{DIMS}_idx" not in plan(db_url, untyped)


def test_hybrid_search_returns_the_nearest_chunks(chunks: None, settings: Settings) -> None:
    async def body() -> list[Any]:
        async with open_pool(settings) as pool, pool.connection() as conn:
            query = [math.cos(1000 * STEP), math.sin(1000 * STEP), 0.0]
            return await search_hybrid(conn, "no such words", query, model=MODEL, limit=3)

    passages = asyncio.run(body())
    assert passages[0].text == "chunk 1000"  # the exact match
    assert {p.text for p in passages} == {"chunk 999", "chunk 1000", "chunk 1001"}
