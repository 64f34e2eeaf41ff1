-- Every change event gets an id (issue 18), so a receiver can drop a copy.
--
-- With BROADCAST_URL=redis://..., two server processes relay the database's
-- events to Redis at once (realtime/notify_relay.py: a leader and a hot
-- standby), so that when one dies the other has already relayed every event
-- of the handover. Each process therefore hears most events twice, and keeps
-- the first copy of each id (realtime/event_hub.py). The id comes from a
-- sequence: unique, and increasing in the order events are raised (not
-- always the order they commit). A copy needs the id: two real changes of a
-- row can send the same payload otherwise (a provider's progress moves
-- within one millisecond of updated_at), and dropping the second would
-- leave a subscriber on the first state.
--
-- The payload of migration 0004 gains one member, "seq":
--   {"user": ..., "kind": ..., "op": ..., "id": ..., "status": ..., "destination": ...,
--    "at": ..., "seq": <bigint>}
-- The triggers stay as they were; only the functions they call change.

CREATE SEQUENCE change_event_ids AS bigint;

CREATE OR REPLACE FUNCTION notify_job_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('portraits_events', json_build_object(
        'user', NEW.user_id,
        'kind', 'job',
        'op', lower(TG_OP),
        'id', NEW.id,
        'status', NEW.status,
        'destination', NEW.destination,
        'at', floor(extract(epoch FROM NEW.updated_at) * 1000)::bigint,
        'seq', nextval('change_event_ids')
    )::text);
    RETURN NULL;
END;
$$;

CREATE OR REPLACE FUNCTION notify_character_image_event() RETURNS trigger
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
        'at', floor(extract(epoch FROM subject.updated_at) * 1000)::bigint,
        'seq', nextval('change_event_ids')
    )::text);
    RETURN NULL;
END;
$$;
