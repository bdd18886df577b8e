-- A follow-up event (a chat sticker, a photo without a caption) from someone with no
-- lead to add it to is kept as an inquiry of its own and starts no lead.
ALTER TABLE inquiries DROP CONSTRAINT inquiries_disposition_check;
ALTER TABLE inquiries ADD CONSTRAINT inquiries_disposition_check
    CHECK (disposition IN ('lead', 'merged', 'duplicate', 'spam', 'unmatched'));
