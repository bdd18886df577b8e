-- What a merged inquiry brought to a lead, and which keys may find the lead.
--
-- Every person key of a merged inquiry is recorded with its merge event. It becomes a
-- look-up key of the lead (a row of lead_identities) only when the merge was by a strong
-- key (an email address or a messenger account); after a match by a phone number alone it
-- is kept here as a record, so one shared number cannot keep pulling more people in.
CREATE TABLE lead_event_keys (
    event_id  bigint NOT NULL REFERENCES lead_events(id) ON DELETE CASCADE,
    key       text NOT NULL,
    adopted   boolean NOT NULL,
    PRIMARY KEY (event_id, key)
);

-- The merge that made a key a look-up key of its lead; NULL for the keys of the inquiry
-- that opened the lead.
ALTER TABLE lead_identities
    ADD COLUMN added_by_event bigint REFERENCES lead_events(id) ON DELETE CASCADE;

-- Merges filed before: record their keys, adopted when the merge was not by a phone.
INSERT INTO lead_event_keys (event_id, key, adopted)
SELECT e.id, k.key, NOT (e.data->'match'->>'key' LIKE 'phone:%')
FROM lead_events e
JOIN inquiries i ON i.id = e.inquiry_id
CROSS JOIN LATERAL jsonb_array_elements_text(
    COALESCE(i.payload->'normalized'->'identity_keys', '[]')) AS k(key)
WHERE e.kind = 'merged' AND e.data->'match'->>'key' IS NOT NULL
ON CONFLICT DO NOTHING;

-- A key only merges by a phone brought stops finding the lead; a key an adopting merge
-- brought names the first such merge.
WITH opening AS (
    SELECT l.id AS lead_id, k.key
    FROM leads l
    JOIN inquiries i ON i.id = l.inquiry_id
    CROSS JOIN LATERAL jsonb_array_elements_text(
        COALESCE(i.payload->'normalized'->'identity_keys', '[]')) AS k(key)
),
merged AS (
    SELECT e.lead_id, k.key, bool_or(k.adopted) AS adopted,
           min(e.id) FILTER (WHERE k.adopted) AS first_adopting
    FROM lead_event_keys k JOIN lead_events e ON e.id = k.event_id
    GROUP BY e.lead_id, k.key
),
dropped AS (
    DELETE FROM lead_identities li
    USING merged m
    WHERE li.lead_id = m.lead_id AND li.key = m.key AND NOT m.adopted
      AND NOT EXISTS (SELECT 1 FROM opening o WHERE o.lead_id = li.lead_id AND o.key = li.key)
    RETURNING li.key
)
UPDATE lead_identities li SET added_by_event = m.first_adopting
FROM merged m
WHERE li.lead_id = m.lead_id AND li.key = m.key AND m.adopted
  AND NOT EXISTS (SELECT 1 FROM opening o WHERE o.lead_id = li.lead_id AND o.key = li.key);
