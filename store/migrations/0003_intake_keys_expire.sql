-- Idempotency keys expire: an expired key is free again, and expired rows are purged in
-- small batches. Keys claimed before this migration hashed the raw request bytes, while
-- newer ones hash the parsed submission; they expire a day after their first use.
ALTER TABLE intake_keys ADD COLUMN expires_at timestamptz;
UPDATE intake_keys SET expires_at = created_at + interval '24 hours';
ALTER TABLE intake_keys ALTER COLUMN expires_at SET NOT NULL;
CREATE INDEX intake_keys_expires ON intake_keys (expires_at);
