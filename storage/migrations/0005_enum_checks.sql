-- The closed sets of storage/enums.py, checked by the database too (issue 12).
--
-- jobs.status, jobs.destination and characters.content_rating have had their
-- CHECKs from the start; an image model's provider and a job's quality get
-- theirs, so a value the code cannot read is refused when it is written
-- (by psql, say), not when a worker claims the job or a client lists models.
-- tests/test_enums.py keeps each list equal to its enum.

ALTER TABLE image_models ADD CONSTRAINT image_models_provider_check CHECK (provider IN ('local', 'fal'));
ALTER TABLE jobs ADD CONSTRAINT jobs_quality_check CHECK (quality IN ('high', 'fast'));
