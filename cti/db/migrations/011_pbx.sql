-- Several PBXes (issue 12, cti/pbx.py): every timeline event, agent leg and queue visit
-- names the Asterisk server it happened on. Uniqueids, Linkedids and channel names are
-- unique only within one server, so a row's channel or Linkedid means something only
-- with its PBX. A call that crosses servers keeps one call id: its events, legs and
-- offers from both PBXes sit under that one call_id, each row tagged with its PBX.
--
-- NULL means the home PBX (the first of CTI_PBXES, or the only one): every row written
-- before this migration came from the one PBX followed then. The home PBX's events
-- written after it carry its name ('default' without CTI_PBXES). Fingerprints of a
-- non-home PBX's events start with '@<pbx>|' (cti/calls/events.py), so two servers'
-- events never meet on the (call_key, fingerprint) key whatever this column says.
--
-- The checks are NOT VALID: the existing rows are all NULL (which passes), so there is
-- nothing to verify, and a validating scan of a large timeline under the ALTER's lock
-- would stall the writers for nothing. New rows are checked all the same.

-- The PBX whose AMI feed made the event (CallEvent.pbx).
ALTER TABLE interaction_events
    ADD COLUMN pbx text,
    ADD CONSTRAINT interaction_events_pbx_check CHECK (pbx ~ '^[a-z][a-z0-9_]{0,15}$') NOT VALID;

-- The PBX of the agent's channel (an agent leg is one channel, on one server).
ALTER TABLE report_legs
    ADD COLUMN pbx text,
    ADD CONSTRAINT report_legs_pbx_check CHECK (pbx ~ '^[a-z][a-z0-9_]{0,15}$') NOT VALID;

-- The PBX of the queue ('queue' offers: a queue is on one server); for the call's
-- journey ('call' offers), the PBX of its first queue, whose thresholds apply.
ALTER TABLE report_offers
    ADD COLUMN pbx text,
    ADD CONSTRAINT report_offers_pbx_check CHECK (pbx ~ '^[a-z][a-z0-9_]{0,15}$') NOT VALID;
