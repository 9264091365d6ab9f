-- Why: uploaded PDF/DOCX documents (issue 3). The API stores the original and enqueues a
-- parse_document task; the runner fills in metadata, the text of every page and the chunks
-- that /v1/search ranks.
--
-- parsed_documents: one row per distinct upload. sha256 is UNIQUE so the same bytes uploaded
--   twice are found, not parsed twice. task_id has no foreign key: tasks may be purged while
--   the document stays.
-- parsed_document_blobs: the original bytes, the embedded default storage (S3 can follow
--   behind the same interface). PDF and DOCX are already compressed, so the column is stored
--   EXTERNAL: out of line, without TOAST spending CPU on compressing them again.
-- parsed_document_pages / parsed_document_chunks: derived from the document and deleted with
--   it (ON DELETE CASCADE), so DELETE of a document removes everything derived from it.
-- tsv: generated with the 'english' configuration (stemming, stop words): the documents are
--   English prose, and search queries must use the same configuration, e.g.
--   websearch_to_tsquery('english', q).
-- embedding: `vector` without a dimension, because the dimension depends on the embedder
--   configured (none, 384, 768, 1536 ...) and may change; embedding_dims records it per row.
--   HNSW needs a fixed dimension, so each dimension in use gets a partial expression index:
--   the one below serves 1536 (Agno's default OpenAI embedder); another embedder's migration
--   adds the same index with its dimension, and its queries say
--   `WHERE embedding_dims = N ORDER BY embedding::vector(N) <=> $query`.
-- The extension goes to schema public: then it is resolvable from every service schema (the
-- search_path is "<schema>,public"), and a second deployment in another schema of the same
-- database does not find it hidden in the first one's schema. It is left in place on the way
-- down: Agno's knowledge tables may use it too.
-- migrate:up
CREATE EXTENSION IF NOT EXISTS vector SCHEMA public;

CREATE TABLE parsed_documents (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    filename       text        NOT NULL CHECK (length(filename) BETWEEN 1 AND 1000),
    content_type   text        NOT NULL,
    kind           text        NOT NULL CHECK (kind IN ('pdf', 'docx')),
    sha256         bytea       NOT NULL UNIQUE CHECK (octet_length(sha256) = 32),
    size_bytes     bigint      NOT NULL CHECK (size_bytes > 0),
    status         text        NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'parsing', 'parsed', 'failed')),
    failure_reason text,
    page_count     integer     CHECK (page_count >= 0),
    title          text,
    author         text,
    producer       text,
    pdf_bytes      bigint      CHECK (pdf_bytes >= 0),
    text_chars     bigint      CHECK (text_chars >= 0),
    task_id        uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    parsed_at      timestamptz,
    CHECK (status <> 'failed' OR failure_reason IS NOT NULL)
);

-- GET /v1/documents pages newest first.
CREATE INDEX parsed_documents_created_idx ON parsed_documents (created_at DESC, id DESC);

CREATE TABLE parsed_document_blobs (
    document_id uuid  PRIMARY KEY REFERENCES parsed_documents (id) ON DELETE CASCADE,
    content     bytea NOT NULL
);
ALTER TABLE parsed_document_blobs ALTER COLUMN content SET STORAGE EXTERNAL;

CREATE TABLE parsed_document_pages (
    document_id uuid    NOT NULL REFERENCES parsed_documents (id) ON DELETE CASCADE,
    page_no     integer NOT NULL CHECK (page_no >= 1),
    text        text    NOT NULL,
    PRIMARY KEY (document_id, page_no)
);

CREATE TABLE parsed_document_chunks (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    document_id     uuid    NOT NULL REFERENCES parsed_documents (id) ON DELETE CASCADE,
    page_no         integer NOT NULL CHECK (page_no >= 1),
    ordinal         integer NOT NULL CHECK (ordinal >= 0),
    char_start      integer NOT NULL CHECK (char_start >= 0),
    char_end        integer NOT NULL CHECK (char_end >= char_start),
    text            text    NOT NULL,
    tsv             tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
    embedding       vector,
    embedding_model text,
    embedding_dims  integer GENERATED ALWAYS AS (vector_dims(embedding)) STORED,
    UNIQUE (document_id, ordinal)
);

CREATE INDEX parsed_document_chunks_tsv_idx ON parsed_document_chunks USING gin (tsv);
CREATE INDEX parsed_document_chunks_page_idx ON parsed_document_chunks (document_id, page_no);
CREATE INDEX parsed_document_chunks_embedding_1536_idx ON parsed_document_chunks
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops)
    WHERE embedding_dims = 1536;

-- migrate:down
DROP TABLE IF EXISTS parsed_document_chunks;
DROP TABLE IF EXISTS parsed_document_pages;
DROP TABLE IF EXISTS parsed_document_blobs;
DROP TABLE IF EXISTS parsed_documents;
