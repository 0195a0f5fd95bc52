-- The sidebar's users (issue 5): who may log in, which device their calls ring, and
-- whether they supervise. The password itself is never stored: password_hash is
-- scrypt with a per-user salt (cti/screenpop/auth.py).
CREATE TABLE agents (
    username      text PRIMARY KEY CHECK (username ~ '^[a-z0-9._-]{1,64}$'),
    display_name  text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 128),
    -- The device the agent's calls ring (PJSIP/2001): the name the call events use.
    endpoint      text NOT NULL UNIQUE
                  CHECK (endpoint ~ '^[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,64}$'),
    role          text NOT NULL DEFAULT 'agent' CHECK (role IN ('agent', 'supervisor')),
    password_hash text NOT NULL CHECK (password_hash LIKE 'scrypt$%'),
    created_at    timestamptz NOT NULL DEFAULT now()
);
