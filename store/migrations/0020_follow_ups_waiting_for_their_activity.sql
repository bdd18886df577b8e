-- A follow-up kept as `unmatched` because it came before its activity (a call's
-- recording callback before any status of the call) is put on that activity when it is
-- created. This index holds only those few waiting inquiries, by activity key.
CREATE INDEX inquiries_unmatched_activity_key
    ON inquiries ((payload->'event'->>'activity_key'))
    WHERE disposition = 'unmatched';
