-- Addresses a contact lists that identify nobody (role mailboxes such as info@, and
-- placeholders such as noreply@): kept on the contact, never a key, so two people who
-- share a mailbox stay two contacts. Contacts stored before keep their keys as they are.
ALTER TABLE contacts ADD COLUMN shared_emails text[] NOT NULL DEFAULT '{}';
CREATE INDEX contacts_shared_emails ON contacts USING gin (shared_emails);
