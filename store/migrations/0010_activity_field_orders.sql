-- Each data field of an activity remembers the order of the event that set it, so an
-- event can be newer for one field and older for another: a call's `<Dial>` outcome
-- decides `missed` whatever status callback comes after it, while `status` still follows
-- the status callbacks. A field not listed has the activity's `event_order`.
ALTER TABLE activities ADD COLUMN field_orders jsonb NOT NULL DEFAULT '{}';
