-- What supervisors did to agents (issue 11): every pause, unpause, queue log-in or
-- log-out and every listen, whisper or barge, with who did it to whom and how it
-- ended. Written by cti/agents/audit.py before the action is sent to Asterisk (result
-- 'pending'), then given its result: 'ok', or the refusal's error code ('refused',
-- 'ami_unavailable', 'not_on_call', 'invalid', ...). A row left 'pending' is an action
-- whose outcome was never learnt. No foreign key to agents: the record outlives them.
CREATE TABLE supervisor_audit (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL,
    supervisor    text NOT NULL CHECK (supervisor ~ '^[a-z0-9._-]{1,64}$'),
    action        text NOT NULL CHECK (action IN (
                      'pause', 'unpause', 'queue_login', 'queue_logout',
                      'listen', 'whisper', 'barge')),
    target_agent  text NOT NULL CHECK (target_agent ~ '^[a-z0-9._-]{1,64}$'),
    queue         text CHECK (length(queue) BETWEEN 1 AND 64),
    reason        text CHECK (length(reason) BETWEEN 1 AND 64),
    call_id       text CHECK (length(call_id) BETWEEN 1 AND 128),
    result        text NOT NULL CHECK (result ~ '^[a-z_]{1,32}$')
);
CREATE INDEX supervisor_audit_at_idx ON supervisor_audit (at);
CREATE INDEX supervisor_audit_target_idx ON supervisor_audit (target_agent, at);
