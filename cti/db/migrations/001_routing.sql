-- Routing: customers and their phones, dialled numbers, queues, ordered rules, and the
-- record of every routed call. Names and values are checked here as well as in the
-- application, so a hand-written UPDATE cannot store what the router would reject.

CREATE TABLE queues (
    name        text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    description text NOT NULL DEFAULT '' CHECK (length(description) <= 200)
);

CREATE TABLE customers (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_number text NOT NULL UNIQUE CHECK (account_number ~ '^[A-Za-z0-9-]{1,32}$'),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tier           text NOT NULL CHECK (tier IN ('platinum', 'gold', 'silver', 'bronze')),
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'delinquent', 'suspended', 'closed')),
    language       text NOT NULL DEFAULT 'en' CHECK (language ~ '^[a-z]{2,3}$'),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per number: the primary key is the index the router's lookup uses.
CREATE TABLE customer_phones (
    e164        text PRIMARY KEY CHECK (e164 ~ '^\+[1-9][0-9]{1,14}$'),
    customer_id bigint NOT NULL REFERENCES customers (id) ON DELETE CASCADE
);
CREATE INDEX customer_phones_customer_idx ON customer_phones (customer_id);

CREATE TABLE dialled_numbers (
    dnis          text PRIMARY KEY CHECK (dnis ~ '^\+?[0-9]{1,20}$'),
    service       text NOT NULL CHECK (service ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    default_queue text NOT NULL REFERENCES queues (name),
    timezone      text NOT NULL DEFAULT 'UTC',
    hours         jsonb  -- {"mon": ["08:00-20:00"], ...}; NULL means always open
);

CREATE TABLE routing_rules (
    position   integer NOT NULL,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    enabled    boolean NOT NULL DEFAULT true,
    match      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(match) = 'object'),
    route      text NOT NULL DEFAULT 'queue' CHECK (route IN ('queue', 'selfservice', 'afterhours')),
    queue      text REFERENCES queues (name),
    priority   integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 1000),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT routing_rules_position_key UNIQUE (position) DEFERRABLE INITIALLY IMMEDIATE,
    CONSTRAINT routing_rules_queue_route CHECK (queue IS NULL OR route = 'queue')
);

-- Every routed call; written off the caller's path by the daemon.
CREATE TABLE interactions (
    call_id          uuid PRIMARY KEY,
    routed_at        timestamptz NOT NULL,
    channel          text NOT NULL,
    uniqueid         text NOT NULL,
    ani              text NOT NULL,
    ani_e164         text,
    dnis             text NOT NULL,
    customer_id      bigint,  -- no foreign key: history outlives a deleted customer
    service          text,
    route            text NOT NULL,
    queue            text,
    priority         integer NOT NULL,
    rule             text NOT NULL,
    tier             text NOT NULL,
    ivr              jsonb NOT NULL DEFAULT '{}',
    decision_us      integer NOT NULL,
    fail_open_reason text
);
CREATE INDEX interactions_customer_idx ON interactions (customer_id, routed_at DESC);
CREATE INDEX interactions_routed_at_idx ON interactions (routed_at);

-- Routers keep the plan in memory and reload it when told.
CREATE FUNCTION cti_notify_routing_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cti_routing_changed', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER queues_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON queues
    FOR EACH STATEMENT EXECUTE FUNCTION cti_notify_routing_changed();
CREATE TRIGGER dialled_numbers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON dialled_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION cti_notify_routing_changed();
CREATE TRIGGER routing_rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON routing_rules
    FOR EACH STATEMENT EXECUTE FUNCTION cti_notify_routing_changed();
