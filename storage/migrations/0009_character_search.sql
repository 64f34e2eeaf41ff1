-- characters(search:, orderBy:) (issue 15).
--
-- A name search is `name ILIKE '%text%'`: a trigram GIN index (pg_trgm) answers it
-- without reading every row of the table. pg_trgm ships with PostgreSQL (the
-- embedded 18 and Debian's 15 both have it) and is a trusted extension: a role
-- with CREATE on the database may create it, superuser or not.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX characters_name_trgm_idx ON characters USING gin (name gin_trgm_ops);

-- Ordering by updated time, either way, pages by keyset like the creation order's
-- characters_user_newest_idx (an index is read backwards for ascending order).
CREATE INDEX characters_user_updated_idx ON characters (user_id, updated_at DESC, id DESC);
