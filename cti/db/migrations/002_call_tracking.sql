-- Call tracking over AMI (issue 4): the history of every call's attached data and the
-- timeline of every call, so that a Redis restart loses nothing and reports have the
-- whole story. Redis holds the live copies; these tables are written off the call path.

-- Every version of a call's attached data, as stored in Redis (cti/calldata). Version 1
-- is the route's document; each accepted edit adds the next version, whole.
CREATE TABLE call_data_history (
    call_id     uuid NOT NULL,
    version     integer NOT NULL CHECK (version >= 1),
    document    jsonb NOT NULL,
    changed_by  text NOT NULL CHECK (length(changed_by) BETWEEN 1 AND 128),
    changed_at  timestamptz NOT NULL,
    PRIMARY KEY (call_id, version)
);

-- The call's timeline as followed over AMI (cti/calls/events.py): one row per event.
-- The fingerprint names the event the same way on every daemon instance, so an event
-- written again after a handover between instances is a no-op (ON CONFLICT DO NOTHING).
CREATE TABLE interaction_events (
    call_key    text NOT NULL CHECK (length(call_key) BETWEEN 1 AND 128),
    call_id     uuid,            -- NULL for a call that never went through the route
    linkedid    text NOT NULL,
    fingerprint text NOT NULL CHECK (length(fingerprint) BETWEEN 1 AND 512),
    at          timestamptz NOT NULL,
    kind        text NOT NULL,
    agent       text,
    detail      jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (call_key, fingerprint)
);
CREATE INDEX interaction_events_call_idx ON interaction_events (call_id, at)
    WHERE call_id IS NOT NULL;
CREATE INDEX interaction_events_agent_idx ON interaction_events (agent, at)
    WHERE agent IS NOT NULL;

-- The summary of a routed call, filled in when it ends (cti/calls/timeline.py).
ALTER TABLE interactions
    ADD COLUMN queued_at   timestamptz,
    ADD COLUMN answered_at timestamptz,
    ADD COLUMN ended_at    timestamptz,
    ADD COLUMN wait_s      double precision CHECK (wait_s >= 0),
    ADD COLUMN talk_s      double precision CHECK (talk_s >= 0),
    ADD COLUMN hold_s      double precision CHECK (hold_s >= 0),
    ADD COLUMN transfers   integer CHECK (transfers >= 0),
    ADD COLUMN agents      text[],
    ADD COLUMN abandoned   boolean,
    ADD COLUMN end_cause   text;
