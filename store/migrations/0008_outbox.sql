-- Outgoing mail. A row is written in the transaction that files the lead it answers, so
-- a lead is never filed without its acknowledgement nor an acknowledgement queued for a
-- lead that was not filed; a worker sends it later, and a failure to send never touches
-- the lead.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    -- One row per lead event and kind (`ack:<inquiry id>`): a redelivery never queues twice.
    dedup_key        text NOT NULL UNIQUE,
    lead_id          bigint REFERENCES leads(id) ON DELETE SET NULL,
    inquiry_id       uuid REFERENCES inquiries(id),
    -- Lower-cased, as the normalizer keeps addresses: the 24-hour rule compares it.
    recipient        text NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    -- The Message-ID this row is sent with, every time: a resend is recognisable.
    message_id       text NOT NULL UNIQUE,
    -- Further headers by name (In-Reply-To, References, Auto-Submitted).
    headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- While `sending`: when the claim lapses and another worker may take the row again.
    claimed_until    timestamptz,
    sent_at          timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX outbox_recipient_recent ON outbox (recipient, created_at);
-- The depth gauge counts what is not sent; sent rows are most of the table.
CREATE INDEX outbox_unsent ON outbox (state) WHERE state <> 'sent';
