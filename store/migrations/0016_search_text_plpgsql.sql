-- The generated `leads.search_text` is computed for every lead written. As 0014 wrote it,
-- `lead_search_text` was an SQL function calling another (`lead_search_fold`). Neither
-- can be inlined (`unaccent` and `concat_ws` are only STABLE), so each insert started a
-- nested query twice over: about 33 us a lead, a tenth of the database's work on intake.
-- PL/pgSQL evaluates a single expression on a cached plan: the same text in about 7 us.
CREATE OR REPLACE FUNCTION lead_search_text(name text, email text, phone text, company text)
    RETURNS text
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    RETURN lower(public.unaccent('public.unaccent'::regdictionary,
                                 concat_ws(' ', name, email, company)))
           || ' ' || coalesce(regexp_replace(phone, '\D', '', 'g'), '');
END
$$;
