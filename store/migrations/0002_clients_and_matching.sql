-- Clients (contacts and companies) and the identity keys that recognise them, and what
-- leads need to record how they were matched.

CREATE TABLE companies (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    domain      text,
    phones      text[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE contacts (
    id          bigserial PRIMARY KEY,
    name        text,
    company_id  bigint REFERENCES companies(id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_company ON contacts (company_id) WHERE company_id IS NOT NULL;

-- A person key (email:, phone:, messenger:) belongs to one contact.
CREATE TABLE contact_identities (
    key         text PRIMARY KEY,
    contact_id  bigint NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
    kind        text NOT NULL,
    value       text NOT NULL
);
CREATE INDEX contact_identities_contact ON contact_identities (contact_id);

-- Company keys (domain:, name:, phone:) may be shared (two shops called "Studio Rossi");
-- matching takes the oldest company.
CREATE TABLE company_identities (
    key         text NOT NULL,
    company_id  bigint NOT NULL REFERENCES companies(id) ON DELETE CASCADE,
    PRIMARY KEY (key, company_id)
);

-- The person keys of every lead, for "is there an open lead for this person?".
CREATE TABLE lead_identities (
    key      text NOT NULL,
    lead_id  bigint NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    PRIMARY KEY (key, lead_id)
);

ALTER TABLE leads
    ADD COLUMN inquiry_count    integer NOT NULL DEFAULT 1,
    ADD COLUMN is_repeat        boolean NOT NULL DEFAULT false,
    ADD COLUMN contact_id       bigint REFERENCES contacts(id),
    ADD COLUMN company_id       bigint REFERENCES companies(id),
    ADD COLUMN previous_lead_id bigint REFERENCES leads(id),
    ADD COLUMN match            jsonb NOT NULL DEFAULT '{"rule": "new", "key": null, "target": null}';

CREATE INDEX leads_contact ON leads (contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX leads_company ON leads (company_id) WHERE company_id IS NOT NULL;

-- Existing leads are found by their keys too.
INSERT INTO lead_identities (key, lead_id)
SELECT 'email:' || email, id FROM leads WHERE email IS NOT NULL
UNION
SELECT 'phone:' || phone, id FROM leads WHERE phone IS NOT NULL
ON CONFLICT DO NOTHING;

-- What happened to a lead besides stage changes (created, merged, ...).
CREATE TABLE lead_events (
    id          bigserial PRIMARY KEY,
    lead_id     bigint NOT NULL REFERENCES leads(id) ON DELETE CASCADE,
    kind        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    inquiry_id  uuid REFERENCES inquiries(id),
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX lead_events_lead ON lead_events (lead_id, at);

ALTER TABLE inquiries DROP CONSTRAINT inquiries_disposition_check;
ALTER TABLE inquiries ADD CONSTRAINT inquiries_disposition_check
    CHECK (disposition IN ('lead', 'merged', 'duplicate', 'spam'));
