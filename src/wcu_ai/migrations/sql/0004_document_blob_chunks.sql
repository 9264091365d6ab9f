-- Why: an upload's original streams into PostgreSQL in pieces (issue 10). With one bytea per
-- document (parsed_document_blobs), PostgreSQL builds the whole value in one backend's memory
-- before it TOASTs it, whether it arrives as an INSERT parameter or through COPY, and reading it
-- back gives the reader the whole value at once: ten 50 MiB uploads cost the database what they
-- used to cost the API. Rows of a bounded size keep the API, the database and the runner at a
-- few chunks per document, whatever its size.
--
-- parsed_document_blob_chunks: the original bytes in order of seq (0, 1, ...), each at most the
--   writer's chunk size (store.BLOB_CHUNK_BYTES, 256 KiB), deleted with their document. Stored
--   EXTERNAL like 0002's column: PDF and DOCX are compressed already.
-- parsed_document_blobs stays: documents uploaded before this migration (or by an API of the
--   previous release during a rolling deploy, which updates the runner first) are read from it,
--   in slices. A later migration can move its rows and drop it. A runner older than this
--   migration does not read the chunks: roll the API back before the runner, not the runner alone.
-- migrate:up
CREATE TABLE parsed_document_blob_chunks (
    document_id uuid    NOT NULL REFERENCES parsed_documents (id) ON DELETE CASCADE,
    seq         integer NOT NULL CHECK (seq >= 0),
    data        bytea   NOT NULL CHECK (octet_length(data) > 0),
    PRIMARY KEY (document_id, seq)
);
ALTER TABLE parsed_document_blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- migrate:down
DROP TABLE IF EXISTS parsed_document_blob_chunks;
