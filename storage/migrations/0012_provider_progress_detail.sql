-- Replicate's logs in the job's providerProgress (issue 16, point 1): the percent of the model's
-- last progress bar and its last log line (pipeline/providers/logs.py bounds and cleans both).
-- NULL when the provider says nothing of the kind (fal, the local renderer).
ALTER TABLE jobs
    ADD COLUMN provider_percent smallint,
    ADD COLUMN provider_message text,
    ADD CONSTRAINT jobs_provider_percent_check CHECK (provider_percent BETWEEN 0 AND 100),
    ADD CONSTRAINT jobs_provider_message_check CHECK (char_length(provider_message) BETWEEN 1 AND 200);

-- A change of either is a change a client sees: the job's change event (jobChanged) carries it, as it
-- carries provider_status and queue_position (migration 0004's trigger, with the two columns added).
DROP TRIGGER jobs_event_update ON jobs;
CREATE TRIGGER jobs_event_update
    AFTER UPDATE OF status, provider_status, queue_position, provider_percent, provider_message, character_id ON jobs
    FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.provider_status IS DISTINCT FROM NEW.provider_status
        OR OLD.queue_position IS DISTINCT FROM NEW.queue_position
        OR OLD.provider_percent IS DISTINCT FROM NEW.provider_percent
        OR OLD.provider_message IS DISTINCT FROM NEW.provider_message
        OR OLD.character_id IS DISTINCT FROM NEW.character_id
    )
    EXECUTE FUNCTION notify_job_event();
