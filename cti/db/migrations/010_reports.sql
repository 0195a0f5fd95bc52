-- Reports (issue 14): each ended call's segments, derived from its timeline
-- (cti/reports/segments.py) and written by the timeline writer in the transaction that
-- summarises the call, so reports read compact facts rather than every event. A late
-- event re-derives the call: its rows are replaced. Routing attributes (tier, rule,
-- dnis, service) are copied from the call's interactions row when it is written.

-- An offer: a queue visit (kind 'queue') or the call's journey (kind 'call': first queue
-- joined to first answer; what reports by tier, rule, number and service count).
CREATE TABLE report_offers (
    call_id    uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('queue', 'call')),
    seq        smallint NOT NULL CHECK (seq >= 0),
    queue      text NOT NULL,
    tier       text,
    rule       text,
    dnis       text,
    service    text,
    entered_at timestamptz NOT NULL,
    left_at    timestamptz NOT NULL,
    wait_s     double precision NOT NULL CHECK (wait_s >= 0),
    outcome    text NOT NULL CHECK (outcome IN
               ('answered', 'abandoned', 'timed_out', 'transferred_out', 'sent_elsewhere')),
    position   integer,
    agent      text,
    talk_s     double precision NOT NULL DEFAULT 0 CHECK (talk_s >= 0),
    hold_s     double precision NOT NULL DEFAULT 0 CHECK (hold_s >= 0),
    wrapup_s   double precision NOT NULL DEFAULT 0 CHECK (wrapup_s >= 0),
    transfers  integer NOT NULL DEFAULT 0 CHECK (transfers >= 0),
    PRIMARY KEY (call_id, kind, seq)
);
-- A report reads one kind over a span of time: these make a day's report an index range.
CREATE INDEX report_offers_entered_idx ON report_offers (kind, entered_at);

-- One row per agent leg: the agents report and the calls list.
CREATE TABLE report_legs (
    call_id     uuid NOT NULL,
    seq         smallint NOT NULL CHECK (seq >= 0),
    agent       text NOT NULL,
    channel     text NOT NULL,
    queue       text,
    rang_at     timestamptz,
    answered_at timestamptz,
    ended_at    timestamptz NOT NULL,
    talk_s      double precision NOT NULL CHECK (talk_s >= 0),
    hold_s      double precision NOT NULL CHECK (hold_s >= 0),
    wrapup_s    double precision NOT NULL DEFAULT 0 CHECK (wrapup_s >= 0),
    how         text NOT NULL CHECK (how IN ('hangup', 'blind', 'attended', 'not_answered')),
    to_whom     text,
    started_at  timestamptz NOT NULL,  -- rang, else answered: what the agents report counts by
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX report_legs_started_idx ON report_legs (started_at);
