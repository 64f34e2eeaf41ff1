-- The object catalog: one row per object we stored, keyed "bucket/path" as
-- characters.image_url holds it. Pages of characters learn which of their
-- images exist from this table inside the same statement, instead of asking
-- the object store once per image (Supabase keeps storage.objects likewise).
-- Rows are written after the object and deleted before it, so a row always
-- names an object that is there (an orphan object without a row is invisible
-- and harmless).

CREATE TABLE stored_objects (
    key          text COLLATE "C" PRIMARY KEY CHECK (key LIKE '%/%'),
    size_bytes   bigint NOT NULL CHECK (size_bytes >= 0),
    content_type text NOT NULL,
    etag         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
