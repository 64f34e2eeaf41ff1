-- Persisted GraphQL documents (issue 15): Apollo's automatic persisted
-- queries and the documents registered ahead of time for production.
--
-- A row is a document that parsed and validated, keyed by the SHA-256 of its
-- text (lowercase hex, as Apollo's persisted-queries link sends it). Every
-- server process reads the same rows (and keeps the ones it uses in memory),
-- so a document one process learned is known to all.
--
-- 'automatic' rows are what clients registered by sending hash and text; the
-- server keeps at most PERSISTED_DOCUMENTS_MAX of them, dropping the least
-- recently used. 'registered' rows come from `portraits documents register`
-- (a client's build output) and are never dropped: in
-- PERSISTED_DOCUMENTS=registered mode only they run.
CREATE TABLE persisted_documents (
    sha256         text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    -- The schema's cached-document bound (graph/schema.py: MAX_CACHED_DOCUMENT_CHARS).
    body           text NOT NULL CHECK (char_length(body) BETWEEN 1 AND 10000),
    source         text NOT NULL CHECK (source IN ('automatic', 'registered')),
    -- The manifest's operation name, for operators (registered rows only).
    operation_name text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- Refreshed at most once an hour per process while the document is used (not on every request).
    last_used_at   timestamptz NOT NULL DEFAULT now()
);

-- Eviction walks the automatic rows from the most recently used.
CREATE INDEX persisted_documents_automatic_by_use
    ON persisted_documents (last_used_at DESC) WHERE source = 'automatic';
