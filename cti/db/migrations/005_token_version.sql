-- Revocable sessions: a token carries the agent's token_version as it was at login and
-- is valid only while it still matches. Logging out, a password change, an endpoint,
-- role or name change bump it (cti/screenpop/agents.py); removing the agent removes
-- the row, which revokes every token too.
ALTER TABLE agents ADD COLUMN token_version integer NOT NULL DEFAULT 1
    CHECK (token_version >= 1);
