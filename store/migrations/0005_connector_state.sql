-- Where each pull connector's source stands (an IMAP UIDVALIDITY and last UID, a chat
-- update offset): one row per source, keyed `channel:source`. A connector writes its
-- cursor only after the broker confirmed every inquiry up to it, and only through the
-- session that holds the source's lease (a session advisory lock), so a replica that
-- lost the lease cannot move it.
CREATE TABLE connector_checkpoints (
    source_key text PRIMARY KEY,
    cursor jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
