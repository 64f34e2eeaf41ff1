-- Every table of DESIGN.md. Later migrations add columns, never tables that
-- this one should have had. Users live in the identity provider (Supabase
-- auth): user_id is the JWT's `sub`, with no users table here.

CREATE FUNCTION touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

CREATE TABLE characters (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id              uuid NOT NULL,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    description          text NOT NULL CHECK (length(description) BETWEEN 1 AND 4000),
    appearance_tags      text[] NOT NULL DEFAULT '{}',
    traits               text,
    persona              text,
    gender               text,
    content_rating       text NOT NULL DEFAULT 'sfw' CHECK (content_rating IN ('sfw', 'nsfw')),
    scene_behavior_rules jsonb,
    -- A storage path (user-library/..., workspace-temp/...) or an external
    -- http(s) URL; never a signed URL, which would expire.
    image_url            text,
    reference_image_url  text,
    seed_locked          bigint,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
-- Serves the viewer's newest-first keyset pagination.
CREATE INDEX characters_user_newest_idx ON characters (user_id, created_at DESC, id DESC);
CREATE TRIGGER characters_touch_updated_at BEFORE UPDATE ON characters
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE image_models (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    model_key    text NOT NULL UNIQUE,
    display_name text NOT NULL,
    provider     text NOT NULL,
    is_default   boolean NOT NULL DEFAULT false,
    is_active    boolean NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now()
);
-- At most one default model.
CREATE UNIQUE INDEX image_models_one_default_idx ON image_models ((true)) WHERE is_default;
INSERT INTO image_models (model_key, display_name, provider, is_default) VALUES
    ('local/portrait-v1', 'Local portrait renderer', 'local', true),
    ('fal-ai/bytedance/seedream/v4/text-to-image', 'Seedream 4.0 (fal.ai)', 'fal', false);

CREATE TABLE jobs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL,
    status              text NOT NULL DEFAULT 'queued'
                        CHECK (status IN ('queued', 'processing', 'completed', 'failed', 'canceled')),
    destination         text NOT NULL CHECK (destination IN ('character_portrait', 'workspace')),
    character_id        uuid REFERENCES characters (id) ON DELETE SET NULL,
    model_key           text NOT NULL REFERENCES image_models (model_key),
    prompt              text NOT NULL,
    quality             text NOT NULL DEFAULT 'high',
    seed                bigint,
    metadata            jsonb NOT NULL DEFAULT '{}',
    attempts            integer NOT NULL DEFAULT 0,
    max_attempts        integer NOT NULL DEFAULT 3,
    run_after           timestamptz NOT NULL DEFAULT now(),
    locked_by           text,
    locked_until        timestamptz,
    provider_request_id text,
    result_url          text,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_user_newest_idx ON jobs (user_id, created_at DESC, id DESC);
CREATE INDEX jobs_character_idx ON jobs (character_id) WHERE character_id IS NOT NULL;
-- The queue: claimable jobs in order.
CREATE INDEX jobs_queue_idx ON jobs (run_after, created_at) WHERE status IN ('queued', 'processing');
CREATE TRIGGER jobs_touch_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION touch_updated_at();

CREATE TABLE workspace_assets (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id             uuid NOT NULL,
    job_id              uuid REFERENCES jobs (id) ON DELETE SET NULL,
    asset_type          text NOT NULL DEFAULT 'image' CHECK (asset_type IN ('image', 'video')),
    temp_storage_path   text NOT NULL UNIQUE,
    thumbnail_path      text,
    mime_type           text NOT NULL,
    file_size_bytes     bigint NOT NULL DEFAULT 0 CHECK (file_size_bytes >= 0),
    original_prompt     text,
    model_used          text,
    generation_seed     bigint,
    generation_settings jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL
);
CREATE INDEX workspace_assets_user_newest_idx ON workspace_assets (user_id, created_at DESC, id DESC);
CREATE INDEX workspace_assets_expiry_idx ON workspace_assets (expires_at);

CREATE TABLE user_library (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id           uuid NOT NULL,
    asset_type        text NOT NULL DEFAULT 'image' CHECK (asset_type IN ('image', 'video')),
    storage_path      text NOT NULL UNIQUE,
    thumbnail_path    text,
    file_size_bytes   bigint NOT NULL DEFAULT 0 CHECK (file_size_bytes >= 0),
    mime_type         text NOT NULL,
    original_prompt   text,
    model_used        text,
    generation_seed   bigint,
    width             integer,
    height            integer,
    tags              text[] NOT NULL DEFAULT '{}',
    roleplay_metadata jsonb NOT NULL DEFAULT '{}',
    content_category  text,
    -- A job is saved to the library once, however often the save step runs.
    source_job_id     uuid UNIQUE REFERENCES jobs (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_library_user_newest_idx ON user_library (user_id, created_at DESC, id DESC);
