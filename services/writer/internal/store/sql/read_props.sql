-- For each property (site, day, key, value) of a batch: whether the value is already
-- counted, and how many distinct values the property already has that day.
SELECT k.i,
       EXISTS (SELECT 1 FROM rollup_dims r
               WHERE r.site_id = k.site_id AND r.day = k.day AND r.dim = 16
                 AND r.key = k.key AND r.value = k.value),
       (SELECT count(*) FROM rollup_dims r
        WHERE r.site_id = k.site_id AND r.day = k.day AND r.dim = 16
          AND r.key = k.key AND r.value <> '(other)')
FROM unnest($1::bigint[], $2::date[], $3::text[], $4::text[]) WITH ORDINALITY AS k(site_id, day, key, value, i)
