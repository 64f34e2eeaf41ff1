-- Change events for realtime subscriptions (issue 5).
--
-- Every change a subscriber may care about sends one NOTIFY on the channel
-- portraits_events, whoever made it (the API, a worker, psql). NOTIFY is
-- delivered at commit, so an event is never heard before its change is
-- visible. The payload is a small JSON object naming the row, never the row
-- itself (NOTIFY payloads must stay under 8000 bytes, and subscribers re-read
-- rows through the same authorised code as queries):
--   {"user": <owner uuid>, "kind": "job"|"character", "op": "insert"|"update"|"delete",
--    "id": <row uuid>, "status": <job status>, "destination": <job destination>,
--    "at": <updated_at in epoch milliseconds>}
-- Each server process LISTENs on this one channel with one connection and
-- routes events to per-user channels in memory (storage/notify_backend.py).

CREATE FUNCTION notify_job_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portraits_events', json_build_object(
        'user', NEW.user_id,
        'kind', 'job',
        'op', lower(TG_OP),
        'id', NEW.id,
        'status', NEW.status,
        'destination', NEW.destination,
        'at', floor(extract(epoch FROM NEW.updated_at) * 1000)::bigint
    )::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_event_insert AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION notify_job_event();

-- What a client sees change: the status, the provider's progress, the
-- character it belongs to. Lease renewals and bookkeeping stay silent.
CREATE TRIGGER jobs_event_update AFTER UPDATE OF status, provider_status, queue_position, character_id ON jobs
    FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.provider_status IS DISTINCT FROM NEW.provider_status
        OR OLD.queue_position IS DISTINCT FROM NEW.queue_position
        OR OLD.character_id IS DISTINCT FROM NEW.character_id
    )
    EXECUTE FUNCTION notify_job_event();

CREATE FUNCTION notify_character_image_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    subject characters;
BEGIN
    IF TG_OP = 'DELETE' THEN
        subject := OLD;
    ELSE
        subject := NEW;
    END IF;
    PERFORM pg_notify('portraits_events', json_build_object(
        'user', subject.user_id,
        'kind', 'character',
        'op', lower(TG_OP),
        'id', subject.id,
        'at', floor(extract(epoch FROM subject.updated_at) * 1000)::bigint
    )::text);
    RETURN NULL;
END;
$$;

-- A character's image changes when it is created with one, when image_url
-- changes, and when the character is deleted (its image is gone).
CREATE TRIGGER characters_event_insert AFTER INSERT ON characters
    FOR EACH ROW WHEN (NEW.image_url IS NOT NULL)
    EXECUTE FUNCTION notify_character_image_event();

CREATE TRIGGER characters_event_update AFTER UPDATE OF image_url ON characters
    FOR EACH ROW WHEN (OLD.image_url IS DISTINCT FROM NEW.image_url)
    EXECUTE FUNCTION notify_character_image_event();

CREATE TRIGGER characters_event_delete AFTER DELETE ON characters
    FOR EACH ROW EXECUTE FUNCTION notify_character_image_event();
