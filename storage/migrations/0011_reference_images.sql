-- Reference-image consistency and the model picker (issue 16, points 3 and 4).
--
-- image_models says what each model can do, so job creation can refuse what a
-- model cannot take (a reference image, a seed) and a client can build its
-- picker from imageModels. Every existing row gets its values below; a row
-- added later takes the defaults (no reference, seeds, 1024x1024) until set.
ALTER TABLE image_models
    ADD COLUMN supports_reference      boolean NOT NULL DEFAULT false,
    ADD COLUMN requires_reference      boolean NOT NULL DEFAULT false,
    ADD COLUMN supports_seed           boolean NOT NULL DEFAULT true,
    -- Sizes the model makes, 'WIDTHxHEIGHT', the one to suggest first.
    ADD COLUMN sizes                   text[] NOT NULL DEFAULT '{1024x1024}',
    -- The longest side it takes for a size of one's own; NULL when only `sizes` are made.
    ADD COLUMN max_side                integer,
    -- A rough figure to show people (seconds from submit to image), not a promise.
    ADD COLUMN typical_latency_seconds real NOT NULL DEFAULT 10,
    ADD CONSTRAINT image_models_reference_check CHECK (supports_reference OR NOT requires_reference),
    -- 1 to 8 sizes (storage/image_models.py: MAX_MODEL_SIZES bounds the GraphQL list), each WIDTHxHEIGHT.
    ADD CONSTRAINT image_models_sizes_check
        CHECK (cardinality(sizes) BETWEEN 1 AND 8 AND array_to_string(sizes, ',') ~ '^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}(,[1-9][0-9]{0,4}x[1-9][0-9]{0,4})*$'),
    ADD CONSTRAINT image_models_max_side_check CHECK (max_side IS NULL OR max_side > 0),
    ADD CONSTRAINT image_models_latency_check CHECK (typical_latency_seconds > 0);

-- The local renderer takes a reference (its palette and a framed inset), any size up to 4096 a side.
UPDATE image_models SET supports_reference = true, supports_seed = true,
    sizes = '{1024x1024,768x1024,1024x768}', max_side = 4096, typical_latency_seconds = 0.1
WHERE model_key = 'local/portrait-v1';

-- Seedream 4.0 text-to-image takes no image (its /edit endpoint does, as image_urls); fal's
-- image_size presets, or a size of one's own up to 4096 a side.
UPDATE image_models SET supports_reference = false, supports_seed = true,
    sizes = '{1024x1024,768x1024,1024x768,576x1024,1024x576}', max_side = 4096, typical_latency_seconds = 15
WHERE model_key = 'fal-ai/bytedance/seedream/v4/text-to-image';

-- SDXL on Replicate (migration 0010): the provider sends prompt, seed, width and height, no image (SDXL's img2img
-- input is not wired), at SDXL's trained resolutions.
UPDATE image_models SET supports_reference = false, supports_seed = true,
    sizes = '{1024x1024,1152x896,896x1152,1216x832,832x1216,1344x768,768x1344}', max_side = NULL,
    typical_latency_seconds = 10
WHERE provider = 'replicate' AND model_key LIKE 'stability-ai/sdxl%';

-- FLUX1.1 [pro] Redux on fal: prompt, image_size and seed as Seedream's, and image_url, the
-- image it restyles (required: a job without a reference is refused before it is paid for).
INSERT INTO image_models (model_key, display_name, provider, is_default, supports_reference, requires_reference,
                          supports_seed, sizes, max_side, typical_latency_seconds)
VALUES ('fal-ai/flux-pro/v1.1/redux', 'FLUX1.1 [pro] Redux (fal.ai)', 'fal', false, true, true,
        true, '{1024x1024,768x1024,1024x768,576x1024,1024x576}', NULL, 10)
ON CONFLICT (model_key) DO NOTHING;

-- Which reference a job was given, and the character's locked seed it took.
ALTER TABLE jobs
    -- "bucket/path", as characters.reference_image_url held it when the job was made.
    ADD COLUMN reference_image_key text,
    -- The library asset at that path, when there was one (null once that asset is deleted).
    ADD COLUMN reference_asset_id  uuid REFERENCES user_library (id) ON DELETE SET NULL,
    -- characters.seed_locked when the job took it (no seed was given); null otherwise.
    ADD COLUMN reference_seed      bigint;
-- Deleting a library asset sets its jobs' reference_asset_id to null: found by this index.
CREATE INDEX jobs_reference_asset_idx ON jobs (reference_asset_id) WHERE reference_asset_id IS NOT NULL;
