-- Replicate as an image provider (issue 16): the provider CHECK takes 'replicate',
-- and SDXL on Replicate is a model to choose.
--
-- A Replicate model key is Replicate's own model reference: owner/name:version
-- runs that version (POST /v1/predictions), owner/name an official model's
-- latest (POST /v1/models/{owner}/{name}/predictions). The row is active; the
-- catalogue lists it with available false, and generating with it is refused,
-- on a server without REPLICATE_API_TOKEN (as fal models without FAL_KEY).
-- tests/test_enums.py keeps the CHECK equal to storage/enums.py's Provider.

ALTER TABLE image_models DROP CONSTRAINT image_models_provider_check;
ALTER TABLE image_models ADD CONSTRAINT image_models_provider_check
    CHECK (provider IN ('local', 'fal', 'replicate'));

INSERT INTO image_models (model_key, display_name, provider, is_default) VALUES
    ('stability-ai/sdxl:39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b',
     'SDXL (Replicate)', 'replicate', false);
