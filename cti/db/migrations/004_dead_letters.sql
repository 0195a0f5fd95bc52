-- Records a writer could not store because the database refused them for good (a NUL
-- byte, a failed CHECK, a value too long: cti/write_errors.py says which errors count).
-- Each is set aside here, whole, so that the writer goes on with the next records and
-- nothing is lost silently (cti/batch_writer.py). `cti db dead-letters` lists them.
CREATE TABLE dead_letters (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    writer        text NOT NULL,
    call_id       text,          -- as the record had it: not always a UUID
    error_class   text NOT NULL,
    error_message text NOT NULL,
    record        jsonb NOT NULL,
    refused_at    timestamptz NOT NULL,
    stored_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_refused_at_idx ON dead_letters (refused_at);
CREATE INDEX dead_letters_call_idx ON dead_letters (call_id) WHERE call_id IS NOT NULL;
