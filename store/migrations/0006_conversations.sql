-- Events and conversations: many inquiries (a mail thread's replies, a chat's messages,
-- a call's status callbacks) belong to one conversation, and some update one activity in
-- place instead of adding another.

-- Which lead each conversation belongs to. A conversation has one lead: the first event
-- that named the key decided it, and later events that name it are filed onto that lead.
CREATE TABLE lead_conversations (
    key         text PRIMARY KEY,
    lead_id     bigint NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    inquiry_id  uuid REFERENCES inquiries(id),
    added_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX lead_conversations_lead ON lead_conversations (lead_id);

-- The activity an event creates or updates in place (one per call, one per chat message),
-- and the order of the newest event applied to it, so a late older event never overwrites
-- a newer one.
ALTER TABLE activities
    ADD COLUMN activity_key text UNIQUE,
    ADD COLUMN event_order  bigint;

-- What an activity records, by channel; form submissions were recorded as 'inquiry'.
UPDATE activities SET kind = CASE channel
        WHEN 'form' THEN 'form'
        WHEN 'email' THEN 'email'
        WHEN 'chat' THEN 'message'
        WHEN 'call' THEN 'call'
        WHEN 'import' THEN 'import'
        ELSE 'note'
    END
WHERE kind = 'inquiry';

-- Labels on a lead (a missed call adds `missed_call`).
ALTER TABLE leads ADD COLUMN tags text[] NOT NULL DEFAULT '{}';

-- A lead's person keys are shown with it, and found by lead.
CREATE INDEX lead_identities_lead ON lead_identities (lead_id);
