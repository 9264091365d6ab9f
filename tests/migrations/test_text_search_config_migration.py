"""Migration 0003 on a database with documents: what was parsed before stays searchable as before."""

from __future__ import annotations

import psycopg

from wcu_ai.migrations import MigrationTool, packaged_migrations
from wcu_ai.settings import Settings

NAME = "0003_text_search_config_and_ocr"


def test_documents_parsed_before_keep_english_and_an_old_runner_still_indexes(
    settings: Settings, db_url: str
) -> None:
    before = [m for m in packaged_migrations() if m.name < NAME]
    MigrationTool(settings, migrations=before).run_up()
    with psycopg.connect(db_url, autocommit=True) as conn:
        doc = conn.execute(
            "INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, status) "
            "VALUES ('old.pdf', 'application/pdf', 'pdf', sha256('old'), 1, 'parsed') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text) "
            "VALUES (%s, 1, 0, 0, 1, 'The horses were running')",
            (doc,),
        )
        conn.execute(
            "INSERT INTO parsed_document_pages (document_id, page_no, text) VALUES (%s, 1, 'x')", (doc,)
        )

    upto = [m for m in packaged_migrations() if m.name <= NAME]
    assert MigrationTool(settings, migrations=upto).run_up() == [NAME]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT text_search_config FROM parsed_documents").fetchall() == [("english",)]
        assert conn.execute("SELECT ocr FROM parsed_document_pages").fetchall() == [(False,)]
        # The tsv column was rebuilt with the chunk's configuration: English stems.
        assert conn.execute(
            "SELECT text_search_config, tsv::text FROM parsed_document_chunks"
        ).fetchall() == [("english", "'hors':2 'run':4")]
        # A runner of the previous release inserts chunks without a configuration: English, as before.
        conn.execute(
            "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text) "
            "VALUES (%s, 1, 1, 0, 1, 'Horses again')",
            (doc,),
        )
        conn.execute(
            "INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text, "
            "text_search_config) VALUES (%s, 1, 2, 0, 1, 'Les chevaux', 'french')",
            (doc,),
        )
        rows = conn.execute(
            "SELECT ordinal, tsv::text FROM parsed_document_chunks ORDER BY ordinal"
        ).fetchall()
        assert rows[1:] == [(1, "'hors':1"), (2, "'cheval':2 'le':1")]

    assert MigrationTool(settings).run_down(1) == [NAME]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT tsv::text FROM parsed_document_chunks WHERE ordinal = 2").fetchone() == (
            "'chevaux':2 'les':1",
        )
