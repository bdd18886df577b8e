-- One narrow row per lead with what the reports and the activity view read, so they
-- scan a row per lead instead of looking up every lead's stage history and planned work.
-- Triggers keep it true for every writer (intake, stage moves, finishing, bulk edits,
-- the digest's abandoning, imports); nothing in the application writes it.

CREATE TABLE lead_summary (
    lead_id        bigint PRIMARY KEY,
    -- Copies of the leads columns the reports group and filter by (and the scope's
    -- responsible_id), kept by lead_summary_lead_changed.
    pipeline_id    bigint NOT NULL,
    created_at     timestamptz NOT NULL,
    source         text NOT NULL,
    channel        text NOT NULL,
    responsible_id bigint,
    stage_id       bigint NOT NULL,
    junk_reason    text,
    -- The lead's stage history in (changed_at, id) order: the stage of every entry, and
    -- how long each stay that is over lasted (one fewer), in seconds as the stage-times
    -- report measures them; the last stay began at last_at and is measured at query
    -- time. Stage semantics are read at query time, so changing one rewrites nothing.
    stay_stage     bigint[] NOT NULL DEFAULT '{}',
    stay_secs      float8[] NOT NULL DEFAULT '{}',
    last_at        timestamptz,
    -- Every stage the lead ever entered, each once, in id order (the funnel's "reached").
    reached        bigint[] NOT NULL DEFAULT '{}',
    -- The earliest due time of its planned activities not done yet.
    next_due       timestamptz
) WITH (fillfactor = 85);
-- Reports select leads by creation time.
CREATE INDEX lead_summary_created ON lead_summary (created_at);
-- The activity view pages each group by due time, and counts the groups (and the lead
-- list its totals) from an index-only scan of the leads in the stages asked for.
CREATE INDEX lead_summary_next_due ON lead_summary (next_due, lead_id);
CREATE INDEX lead_summary_stage_due ON lead_summary (stage_id, next_due)
    INCLUDE (responsible_id, pipeline_id);

-- The history columns of each lead that has history, from lead_stage_history. A filter
-- on lead_id reaches the index scan (it is the window's partition and the group).
CREATE VIEW lead_summary_history AS
SELECT lead_id,
       array_agg(to_stage_id ORDER BY changed_at, id) AS stay_stage,
       coalesce(array_agg(secs ORDER BY changed_at, id) FILTER (WHERE secs IS NOT NULL),
                '{}') AS stay_secs,
       max(changed_at) AS last_at,
       array_agg(DISTINCT to_stage_id) AS reached
  FROM (SELECT lead_id, id, to_stage_id, changed_at,
               extract(epoch FROM lead(changed_at) OVER w - changed_at)::float8 AS secs
          FROM lead_stage_history
        WINDOW w AS (PARTITION BY lead_id ORDER BY changed_at, id)) h
 GROUP BY lead_id;

-- Recomputes the history columns of the given leads. Their rows are locked first so
-- that the recomputing statement's snapshot (taken after the lock) sees whatever a
-- concurrent writer of the same lead committed.
CREATE FUNCTION lead_summary_refresh_history(ids bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM lead_summary WHERE lead_id = ANY (ids) ORDER BY lead_id FOR UPDATE;
    UPDATE lead_summary s
       SET stay_stage = coalesce(h.stay_stage, '{}'), stay_secs = coalesce(h.stay_secs, '{}'),
           last_at = h.last_at, reached = coalesce(h.reached, '{}')
      FROM unnest(ids) AS i(id)
      LEFT JOIN (SELECT * FROM lead_summary_history WHERE lead_id = ANY (ids)) h
             ON h.lead_id = i.id
     WHERE s.lead_id = i.id;
END $$;

CREATE FUNCTION lead_summary_history_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_history(ARRAY(SELECT DISTINCT lead_id FROM new_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_history_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_history(ARRAY(SELECT DISTINCT lead_id FROM old_rows));
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_history_updated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_history(ARRAY(
        SELECT lead_id FROM old_rows UNION SELECT lead_id FROM new_rows));
    RETURN NULL;
END $$;

-- Statement triggers: a batch of history rows (intake, bulk moves) costs one statement.
CREATE TRIGGER lead_summary_history_insert AFTER INSERT ON lead_stage_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_history_inserted();
CREATE TRIGGER lead_summary_history_delete AFTER DELETE ON lead_stage_history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_history_deleted();
CREATE TRIGGER lead_summary_history_update AFTER UPDATE ON lead_stage_history
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_history_updated();

CREATE FUNCTION lead_summary_leads_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO lead_summary (lead_id, pipeline_id, created_at, source, channel,
                              responsible_id, stage_id, junk_reason)
    SELECT id, pipeline_id, created_at, source, channel, responsible_id, stage_id, junk_reason
      FROM new_rows;
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_leads_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lead_summary s USING old_rows o WHERE s.lead_id = o.id;
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_lead_changed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    UPDATE lead_summary
       SET pipeline_id = NEW.pipeline_id, created_at = NEW.created_at, source = NEW.source,
           channel = NEW.channel, responsible_id = NEW.responsible_id,
           stage_id = NEW.stage_id, junk_reason = NEW.junk_reason
     WHERE lead_id = NEW.id;
    RETURN NULL;
END $$;

CREATE TRIGGER lead_summary_leads_insert AFTER INSERT ON leads
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_leads_inserted();
CREATE TRIGGER lead_summary_leads_delete AFTER DELETE ON leads
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_leads_deleted();
-- A row trigger with a WHEN clause: the many updates that touch none of these columns
-- (contact details, counters, updated_at) never call it.
CREATE TRIGGER lead_summary_lead_update
    AFTER UPDATE OF pipeline_id, created_at, source, channel, responsible_id, stage_id,
                    junk_reason ON leads
    FOR EACH ROW
    WHEN ((OLD.pipeline_id, OLD.created_at, OLD.source, OLD.channel, OLD.responsible_id,
           OLD.stage_id, OLD.junk_reason)
          IS DISTINCT FROM
          (NEW.pipeline_id, NEW.created_at, NEW.source, NEW.channel, NEW.responsible_id,
           NEW.stage_id, NEW.junk_reason))
    EXECUTE FUNCTION lead_summary_lead_changed();

-- next_due of the given leads, recomputed from their open planned activities (the
-- activities_open_due index); written only when it changed.
CREATE FUNCTION lead_summary_refresh_due(ids bigint[]) RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(ids) = 0 THEN
        RETURN;
    END IF;
    UPDATE lead_summary s SET next_due = d.due
      FROM (SELECT i.id,
                   (SELECT min(a.due_at) FROM activities a
                     WHERE a.lead_id = i.id AND NOT a.done AND a.due_at IS NOT NULL) AS due
              FROM unnest(ids) AS i(id)) d
     WHERE s.lead_id = d.id AND s.next_due IS DISTINCT FROM d.due;
END $$;

-- Only planned work (a due time) moves next_due: the conversation history that intake
-- adds costs one scan of the statement's new rows.
CREATE FUNCTION lead_summary_activities_inserted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_due(ARRAY(
        SELECT DISTINCT lead_id FROM new_rows WHERE due_at IS NOT NULL));
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_activities_deleted() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_due(ARRAY(
        SELECT DISTINCT lead_id FROM old_rows WHERE due_at IS NOT NULL));
    RETURN NULL;
END $$;

CREATE FUNCTION lead_summary_activities_updated() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    PERFORM lead_summary_refresh_due(ARRAY(
        SELECT lead_id FROM old_rows WHERE due_at IS NOT NULL
        UNION
        SELECT lead_id FROM new_rows WHERE due_at IS NOT NULL));
    RETURN NULL;
END $$;

CREATE TRIGGER lead_summary_activities_insert AFTER INSERT ON activities
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_activities_inserted();
CREATE TRIGGER lead_summary_activities_delete AFTER DELETE ON activities
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_activities_deleted();
CREATE TRIGGER lead_summary_activities_update AFTER UPDATE ON activities
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION lead_summary_activities_updated();

-- Rebuilds every row from leads, their history and their activities: the migration
-- fills the table with it, and a bulk load that bypassed the triggers (session
-- replication role `replica`) calls it afterwards.
CREATE FUNCTION lead_summary_rebuild() RETURNS void
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM lead_summary;
    INSERT INTO lead_summary (lead_id, pipeline_id, created_at, source, channel, responsible_id,
                              stage_id, junk_reason, stay_stage, stay_secs, last_at, reached,
                              next_due)
    SELECT l.id, l.pipeline_id, l.created_at, l.source, l.channel, l.responsible_id, l.stage_id,
           l.junk_reason, coalesce(h.stay_stage, '{}'), coalesce(h.stay_secs, '{}'), h.last_at,
           coalesce(h.reached, '{}'), d.due
      FROM leads l
      LEFT JOIN lead_summary_history h ON h.lead_id = l.id
      LEFT JOIN (SELECT lead_id, min(due_at) AS due FROM activities
                  WHERE NOT done AND due_at IS NOT NULL
                  GROUP BY lead_id) d ON d.lead_id = l.id;
END $$;

SELECT lead_summary_rebuild();
ANALYZE lead_summary;
