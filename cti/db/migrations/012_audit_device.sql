-- Several PBXes (issue 12): a supervisor action names the agent's device as cti names
-- it (PJSIP/2001 on the home PBX, PJSIP/2001@b on PBX b), so the audit says which
-- Asterisk the action went to, even after the agent's record changes or goes. Rows
-- written before this migration have none.
ALTER TABLE supervisor_audit
    ADD COLUMN device text CHECK (device ~ '^[A-Za-z0-9]+/[A-Za-z0-9_.@-]{1,64}$');
