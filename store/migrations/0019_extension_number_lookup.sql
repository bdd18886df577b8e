-- A lead whose person gave an extension holds `phone:<e164>;ext=<n>`. Asking for the
-- leads of the number alone finds it too, through this index of the few keys that carry
-- an extension (the hot path inserts no more index entries for the others).
CREATE INDEX lead_identities_extension_number
    ON lead_identities (split_part(key, ';ext=', 1))
    WHERE key LIKE 'phone:%;ext=%';
