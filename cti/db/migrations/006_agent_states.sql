-- Agent states and wrap-up (issue 11): per-queue timers and pause reasons in the routing
-- plan (cti/routing/plan.py), and every agent state interval for the reports (issue 14).

-- The queue's timers: wrap-up cti imposes after a call (0: none), the service level's
-- threshold and the short-abandon threshold (seconds).
ALTER TABLE queues
    ADD COLUMN wrapup_s        integer NOT NULL DEFAULT 0  CHECK (wrapup_s BETWEEN 0 AND 3600),
    ADD COLUMN sl_threshold_s  integer NOT NULL DEFAULT 20 CHECK (sl_threshold_s BETWEEN 0 AND 3600),
    ADD COLUMN short_abandon_s integer NOT NULL DEFAULT 5  CHECK (short_abandon_s BETWEEN 0 AND 3600);

-- The reasons an agent may give for a pause, in the plan's order.
CREATE TABLE pause_reasons (
    position    integer PRIMARY KEY CHECK (position >= 1),
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_-]{0,31}$' AND name <> 'wrap-up'),
    productive  boolean NOT NULL DEFAULT false,
    max_minutes integer CHECK (max_minutes BETWEEN 1 AND 1440)
);
CREATE TRIGGER pause_reasons_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON pause_reasons
    FOR EACH STATEMENT EXECUTE FUNCTION cti_notify_routing_changed();

-- One row per interval an agent spent in a state (cti/agents): overall (queue NULL) and
-- per queue membership. Written by the AMI leader when the interval ends; the
-- fingerprint makes a row written again after a leader handover a no-op.
CREATE TABLE agent_state_log (
    agent       text NOT NULL CHECK (length(agent) BETWEEN 1 AND 128),
    queue       text CHECK (length(queue) BETWEEN 1 AND 64),
    state       text NOT NULL CHECK (state IN
                    ('logged_out', 'available', 'ringing', 'on_call', 'on_hold', 'wrap_up', 'paused')),
    reason      text CHECK (length(reason) <= 64),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz NOT NULL CHECK (ended_at >= started_at),
    call_id     text CHECK (length(call_id) <= 128)
);
CREATE UNIQUE INDEX agent_state_log_key ON agent_state_log (agent, (coalesce(queue, '')), started_at);
CREATE INDEX agent_state_log_started_idx ON agent_state_log (started_at);
