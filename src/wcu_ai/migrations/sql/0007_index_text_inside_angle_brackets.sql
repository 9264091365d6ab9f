-- Why: PostgreSQL's default text-search parser reads "<...>" as an HTML tag and drops it, so the
-- words of "List<Capybara>", "x<y and y>z" or "<script>alert(1)</script>" were not indexed and
-- could not be found. The chunks are indexed with < and > replaced by spaces (translate() maps one
-- character to one, so positions stay where they were); the stored text keeps them, and the
-- search's headline (documents/queries.sql, search_text) reads the same replaced text, so its
-- snippets have the words too (documents/search.py puts the document's characters back).
--
-- Re-adding tsv rewrites parsed_document_chunks and rebuilds its GIN index under an exclusive
-- lock: searches and parses wait for it (seconds per hundred thousand chunks). A runner of the
-- previous release needs no change: the column is computed by the database.
-- migrate:up
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
    END, translate(text, '<>', '  '))) STORED;
CREATE INDEX parsed_document_chunks_tsv_idx ON parsed_document_chunks USING gin (tsv);

-- migrate:down
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
