-- Lists, search and kanban over leads: text search over name, email, phone digits and
-- company (case- and accent-insensitive), and the sort orders the list offers.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS unaccent;

-- unaccent() is only STABLE (its dictionary could be swapped), so a generated column
-- cannot use it directly; naming the dictionary makes the result depend on the arguments
-- alone. Names are schema-qualified so a restore (empty search_path) still finds them.
CREATE FUNCTION lead_search_fold(text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, $1)) $$;

-- What `q` searches: folded name, email and company, and the phone's digits.
CREATE FUNCTION lead_search_text(name text, email text, phone text, company text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT public.lead_search_fold(concat_ws(' ', name, email, company))
                 || ' ' || coalesce(regexp_replace(phone, '\D', '', 'g'), '') $$;

-- Stored, not an index expression: a search that matches many leads checks each row
-- against this text instead of folding it again (60 us a row through unaccent), so a
-- page of a common word stays cheap whichever plan PostgreSQL picks. Adding it rewrites
-- the leads table once.
ALTER TABLE leads ADD COLUMN search_text text
    GENERATED ALWAYS AS (public.lead_search_text(name, email, phone, company)) STORED;
CREATE INDEX leads_search ON leads USING gin (search_text gin_trgm_ops);

-- Keyset pages under each sort (created_at has leads_created already).
CREATE INDEX leads_updated ON leads (updated_at, id);
CREATE INDEX leads_stage_entered_at ON leads (stage_entered_at, id);
CREATE INDEX leads_name ON leads ((coalesce(name, '')), id);
CREATE INDEX leads_tags ON leads USING gin (tags);
