-- Replies to a lead through its chat (Telegram, WhatsApp). A row is written in the
-- transaction that records its outbound activity on the lead, so an answer to the API
-- always has both; a worker sends it later and marks the activity sent or failed.
CREATE TABLE replies (
    id               bigserial PRIMARY KEY,
    lead_id          bigint NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    activity_id      bigint NOT NULL UNIQUE REFERENCES activities(id) ON DELETE CASCADE,
    -- `telegram` or `whatsapp`.
    platform         text NOT NULL CHECK (platform IN ('telegram', 'whatsapp')),
    -- The bot's name (Telegram) or the phone_number_id the chat came to (WhatsApp).
    account          text NOT NULL,
    -- The chat id (Telegram) or the customer's wa_id (WhatsApp).
    chat_id          text NOT NULL,
    body             text NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- While `sending`: when the claim lapses and another worker may take the row again.
    claimed_until    timestamptz,
    sent_at          timestamptz,
    -- The platform's id of the sent message (Telegram message_id, WhatsApp wamid).
    platform_message_id text,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX replies_due ON replies (next_attempt_at) WHERE state IN ('pending', 'sending');
CREATE INDEX replies_unsent ON replies (state) WHERE state <> 'sent';

-- A reply by mail goes through the mail outbox; the activity it records is marked when
-- the mail is sent or given up on.
ALTER TABLE outbox ADD COLUMN activity_id bigint REFERENCES activities(id) ON DELETE SET NULL;
