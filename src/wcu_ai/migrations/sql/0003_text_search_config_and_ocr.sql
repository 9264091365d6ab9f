-- Why: full-text search was English-only (issue 10 item 13) and OCRed pages were not marked
-- (item 11).
--
-- text_search_config: the PostgreSQL text-search configuration a document's chunks are indexed
--   with: given at upload or detected from the text at parse time, 'simple' (no stemming, no stop
--   words) when no language is recognised. It is text, not regconfig: pg_upgrade (RDS major
--   version upgrades) refuses user tables with reg* columns other than regclass/regrole/regtype.
--   The allowed names are PostgreSQL's built-in configurations with a stop-word list (present in
--   every supported release) and 'simple'; documents/textsearch.py holds the same list.
-- parsed_document_chunks.text_search_config: copied from the document so the generated tsv column
--   can use it (a generated column sees only its own row). The CASE maps the name to a regconfig
--   constant: a text-to-regconfig cast depends on search_path and is not immutable, the constants
--   are resolved here, once. Its default 'english' keeps a runner of the previous release, which
--   inserts chunks without it, indexing them as before during a rolling deploy.
-- Existing documents were indexed in 'english' and keep it. Re-adding tsv rewrites the chunks
--   table and rebuilds its GIN index under an exclusive lock: searches wait for it (seconds per
--   hundred thousand chunks).
-- parsed_document_pages.ocr: the page's text came from OCR, not from its text layer.
-- migrate:up
ALTER TABLE parsed_documents
    ADD COLUMN text_search_config text CHECK (text_search_config IN (
        'simple', 'danish', 'dutch', 'english', 'finnish', 'french', 'german', 'hungarian',
        'italian', 'norwegian', 'portuguese', 'russian', 'spanish', 'swedish', 'turkish'));
UPDATE parsed_documents SET text_search_config = 'english' WHERE status = 'parsed';

ALTER TABLE parsed_document_pages ADD COLUMN ocr boolean NOT NULL DEFAULT false;

ALTER TABLE parsed_document_chunks
    ADD COLUMN text_search_config text NOT NULL DEFAULT 'english' CHECK (text_search_config IN (
        'simple', 'danish', 'dutch', 'english', 'finnish', 'french', 'german', 'hungarian',
        'italian', 'norwegian', 'portuguese', 'russian', 'spanish', 'swedish', 'turkish'));
ALTER TABLE parsed_document_chunks DROP COLUMN tsv;
ALTER TABLE parsed_document_chunks ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector(
    CASE text_search_config
        WHEN 'danish' THEN 'pg_catalog.danish'::regconfig
        WHEN 'dutch' THEN 'pg_catalog.dutch'::regconfig
        WHEN 'english' THEN 'pg_catalog.english'::regconfig
        WHEN 'finnish' THEN 'pg_catalog.finnish'::regconfig
        WHEN 'french' THEN 'pg_catalog.french'::regconfig
        WHEN 'german' THEN 'pg_catalog.german'::regconfig
        WHEN 'hungarian' THEN 'pg_catalog.hungarian'::regconfig
        WHEN 'italian' THEN 'pg_catalog.italian'::regconfig
        WHEN 'norwegian' THEN 'pg_catalog.norwegian'::regconfig
        WHEN 'portuguese' THEN 'pg_catalog.portuguese'::regconfig
        WHEN 'russian' THEN 'pg_catalog.russian'::regconfig
        WHEN 'spanish' THEN 'pg_catalog.spanish'::regconfig
        WHEN 'swedish' THEN 'pg_catalog.swedish'::regconfig
        WHEN 'turkish' THEN 'pg_catalog.turkish'::regconfig
        ELSE 'pg_catalog.simple'::regconfig
    END, text)) STORED;
CREATE INDEX parsed_document_chunks_tsv_idx ON parsed_document_chunks USING gin (tsv);

-- migrate:down
ALTER TABLE parsed_document_chunks DROP COLUMN tsv;
ALTER TABLE parsed_document_chunks
    ADD COLUMN tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED;
CREATE INDEX parsed_document_chunks_tsv_idx ON parsed_document_chunks USING gin (tsv);
ALTER TABLE parsed_document_chunks DROP COLUMN text_search_config;
ALTER TABLE parsed_document_pages DROP COLUMN ocr;
ALTER TABLE parsed_documents DROP COLUMN text_search_config;
