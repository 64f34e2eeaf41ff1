-- The jobs table as a queue (issue 4): provider progress, the wake-up
-- notifications workers LISTEN for, and the indexes the worker, the per-user
-- cap and the sweeper need.

-- What the provider last said about the request (fal: IN_QUEUE, IN_PROGRESS,
-- COMPLETED) and where it sits in the provider's queue, when it says so.
ALTER TABLE jobs ADD COLUMN provider_status text;
ALTER TABLE jobs ADD COLUMN queue_position integer;

-- The per-user cap counts active jobs.
CREATE INDEX jobs_active_user_idx ON jobs (user_id) WHERE status IN ('queued', 'processing');

-- A job makes one workspace asset; the worker looks it up by job to skip
-- work a crashed attempt already did.
CREATE UNIQUE INDEX workspace_assets_job_idx ON workspace_assets (job_id);

-- The sweeper never deletes a workspace image a character still points at.
CREATE INDEX characters_image_url_idx ON characters (image_url);
CREATE INDEX characters_reference_image_url_idx ON characters (reference_image_url);

-- Workers LISTEN on portraits_jobs_ready and claim when woken. NOTIFY is
-- delivered at commit, and identical notifications of one transaction fold
-- into one, so a burst of inserts wakes each worker once.
CREATE FUNCTION notify_job_ready() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portraits_jobs_ready', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_ready AFTER INSERT OR UPDATE OF status, run_after ON jobs
    FOR EACH ROW WHEN (NEW.status = 'queued') EXECUTE FUNCTION notify_job_ready();

-- A canceled running job: the worker running it stops at once (and cancels
-- the provider's request) instead of at its next lease renewal.
CREATE FUNCTION notify_job_canceled() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portraits_jobs_canceled', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_canceled AFTER UPDATE OF status ON jobs
    FOR EACH ROW WHEN (NEW.status = 'canceled' AND OLD.status = 'processing')
    EXECUTE FUNCTION notify_job_canceled();
