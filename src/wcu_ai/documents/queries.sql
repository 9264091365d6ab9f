-- Named queries on parsed_documents and what is derived from them (migrations 0002, 0003).

-- name: insert_document
-- ON CONFLICT: the same bytes uploaded again are found by their hash, not parsed twice.
INSERT INTO parsed_documents (filename, content_type, kind, sha256, size_bytes, text_search_config)
VALUES (%(filename)s, %(content_type)s, %(kind)s, %(sha256)s, %(size_bytes)s, %(text_search_config)s)
ON CONFLICT (sha256) DO NOTHING
RETURNING id;

-- name: find_by_sha256
SELECT id FROM parsed_documents WHERE sha256 = %(sha256)s;

-- name: copy_blob_chunks_in
-- Binary COPY: the chunks go over the wire as they are (text COPY would double them in hex), one
-- row each, so the server holds one chunk at a time (migration 0004).
COPY parsed_document_blob_chunks (document_id, seq, data) FROM STDIN (FORMAT binary);

-- name: copy_blob_chunks_out
COPY (SELECT data FROM parsed_document_blob_chunks WHERE document_id = %(id)s ORDER BY seq)
TO STDOUT (FORMAT binary);

-- name: legacy_blob_size
-- Originals stored before migration 0004, one bytea each.
SELECT octet_length(content) AS size FROM parsed_document_blobs WHERE document_id = %(id)s;

-- name: legacy_blob_slice
-- substring() of an EXTERNAL (uncompressed) value reads only the TOAST chunks it covers.
SELECT substring(content FROM %(start)s FOR %(length)s) AS part
FROM parsed_document_blobs WHERE document_id = %(id)s;

-- name: set_task
UPDATE parsed_documents SET task_id = %(task_id)s, updated_at = now() WHERE id = %(id)s;

-- name: get
SELECT id, filename, content_type, kind, encode(sha256, 'hex') AS sha256, size_bytes, status, failure_reason,
       page_count, title, author, producer, pdf_bytes, text_chars, text_search_config, task_id, created_at,
       updated_at, parsed_at
FROM parsed_documents WHERE id = %(id)s;

-- name: list
SELECT id, filename, content_type, kind, encode(sha256, 'hex') AS sha256, size_bytes, status, failure_reason,
       page_count, title, author, producer, pdf_bytes, text_chars, text_search_config, task_id, created_at,
       updated_at, parsed_at
FROM parsed_documents
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(before_ts)s::timestamptz IS NULL OR (created_at, id) < (%(before_ts)s, %(before_id)s::uuid))
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: page_range
-- Pages from_page..to_page in order, at most max_pages of them, and of those only as many as fit in
-- max_chars characters: the first always, cut to max_chars (a page longer than that exists only
-- from before the per-page limit). The window adds up lengths, so no text past the budget leaves
-- the server; max_pages bounds the pages whose length is computed.
SELECT page_no, ocr, chars, left(text, %(max_chars)s) AS text
FROM (
    SELECT page_no, ocr, text, length(text) AS chars,
           sum(length(text)) OVER (ORDER BY page_no) AS running,
           row_number() OVER (ORDER BY page_no) AS n
    FROM (SELECT page_no, ocr, text FROM parsed_document_pages
          WHERE document_id = %(id)s AND page_no BETWEEN %(from_page)s AND %(to_page)s
          ORDER BY page_no LIMIT %(max_pages)s) AS wanted
) AS counted
WHERE running <= %(max_chars)s OR n = 1
ORDER BY page_no;

-- name: delete
DELETE FROM parsed_documents WHERE id = %(id)s RETURNING id;

-- name: lock_for_parsing
-- Row lock for the duration of the parse transaction: a concurrent DELETE waits, then removes it all.
SELECT status FROM parsed_documents WHERE id = %(id)s FOR UPDATE;

-- name: mark_parsing
UPDATE parsed_documents SET status = 'parsing', failure_reason = NULL, updated_at = now() WHERE id = %(id)s;

-- name: mark_queued
UPDATE parsed_documents SET status = 'queued', updated_at = now() WHERE id = %(id)s AND status = 'parsing';

-- name: mark_failed
UPDATE parsed_documents SET status = 'failed', failure_reason = %(reason)s, updated_at = now() WHERE id = %(id)s;

-- name: clear_derived
DELETE FROM parsed_document_pages WHERE document_id = %(id)s;

-- name: clear_chunks
DELETE FROM parsed_document_chunks WHERE document_id = %(id)s;

-- name: insert_page
INSERT INTO parsed_document_pages (document_id, page_no, text, ocr) VALUES (%(id)s, %(page_no)s, %(text)s, %(ocr)s);

-- name: insert_chunk
INSERT INTO parsed_document_chunks (document_id, page_no, ordinal, char_start, char_end, text, embedding,
                                    embedding_model, text_search_config)
VALUES (%(id)s, %(page_no)s, %(ordinal)s, %(char_start)s, %(char_end)s, %(text)s, %(embedding)s::vector,
        %(embedding_model)s, %(text_search_config)s);

-- name: text_search_config
-- The configuration given at upload, if any (NULL: detect it).
SELECT text_search_config FROM parsed_documents WHERE id = %(id)s;

-- name: detect_text_search_config
-- How many of the sample's words each configuration keeps: its stop words are dropped, every
-- other word keeps its positions in the tsvector (at most 256 per lexeme, far more than a
-- sample of a few thousand characters repeats a word). textsearch.choose_config decides.
SELECT c.config, (SELECT count(*) FROM unnest(to_tsvector(c.config::regconfig, %(sample)s)) AS t,
                                       unnest(t.positions)) AS kept
FROM unnest(%(configs)s::text[]) AS c(config);

-- name: mark_parsed
UPDATE parsed_documents
SET status = 'parsed', failure_reason = NULL, page_count = %(page_count)s, title = %(title)s,
    author = %(author)s, producer = %(producer)s, pdf_bytes = %(pdf_bytes)s, text_chars = %(text_chars)s,
    text_search_config = %(text_search_config)s, parsed_at = now(), updated_at = now()
WHERE id = %(id)s;

-- name: search_text
-- Full-text ranking: websearch syntax ("quoted phrases", -exclusions, or). Each chunk's tsv was
-- built with its document's configuration, so the query is parsed once per configuration (all of
-- them are passed) and a chunk is matched by its own configuration's query. Configurations that
-- parse the query alike share one probe of the GIN index (GROUP BY query); one that finds only
-- stop words in it has no probe at all. The headline marks matches with the control characters
-- STX/ETX (taken out of the text first), never with markup: search.py turns them into offsets,
-- so a document's own "<b>" or "<img onerror=...>" stays text. The headline reads the text with
-- < and > as spaces, as tsv indexes it (migration 0007), or the parser would drop "<...>" as a
-- tag; search.py takes the snippet's characters from the chunk's own text.
WITH q AS (
    SELECT array_agg(config) AS configs, query
    FROM unnest(%(configs)s::text[]) AS c(config),
         websearch_to_tsquery(c.config::regconfig, %(q)s) AS t(query)
    WHERE numnode(query) > 0
    GROUP BY query
)
SELECT c.document_id, c.page_no, c.ordinal, c.text,
       ts_rank_cd(c.tsv, q.query) AS score,
       ts_headline(c.text_search_config::regconfig, translate(c.text, E'\x02\x03<>', '    '), q.query,
                   E'StartSel=\x02, StopSel=\x03, MaxFragments=1, MaxWords=40, MinWords=15') AS snippet
FROM q
JOIN parsed_document_chunks c ON c.tsv @@ q.query AND c.text_search_config = ANY (q.configs)
JOIN parsed_documents d ON d.id = c.document_id AND d.status = 'parsed'
ORDER BY score DESC, c.document_id, c.ordinal
LIMIT %(limit)s;

-- name: search_vector
-- Nearest chunks by cosine distance among those embedded by the same model and dimension.
-- {dims} is the embedding's length, composed in as a literal (psycopg.sql, never text): the
-- planner uses a per-dimension HNSW index (migration 0002: embedding::vector(1536) ... WHERE
-- embedding_dims = 1536) only when the query repeats its expression and predicate exactly.
SELECT c.document_id, c.page_no, c.ordinal, c.text,
       1 - (c.embedding::vector({dims}) <=> %(embedding)s::vector({dims})) AS score,
       left(c.text, 300) AS snippet
FROM parsed_document_chunks c
JOIN parsed_documents d ON d.id = c.document_id AND d.status = 'parsed'
WHERE c.embedding_dims = {dims} AND c.embedding_model = %(model)s
ORDER BY c.embedding::vector({dims}) <=> %(embedding)s::vector({dims})
LIMIT %(limit)s;

-- name: stuck_documents
-- Documents waiting on a parse that will never come: their task is gone (task_id has no foreign
-- key, so a pruned or deleted task leaves it dangling) or ended failed or cancelled while the
-- document still says queued or parsing (a runner killed during the last attempt, an operator's
-- cancel). Read through parsed_documents_unfinished_idx (migration 0006).
-- FOR UPDATE OF d SKIP LOCKED: a document a parse holds right now is left to the next sweep.
SELECT d.id, d.task_id, t.status AS task_status, t.last_error AS task_error
FROM parsed_documents d
LEFT JOIN ai_server_tasks t ON t.id = d.task_id
WHERE d.status IN ('queued', 'parsing') AND (t.id IS NULL OR t.status IN ('failed', 'cancelled'))
ORDER BY d.created_at
LIMIT %(limit)s
FOR UPDATE OF d SKIP LOCKED;

-- name: requeue_document
UPDATE parsed_documents
SET status = 'queued', failure_reason = NULL, task_id = %(task_id)s, updated_at = now()
WHERE id = %(id)s;
