-- For each property (site, day, key) of a batch ($1, $2, $3), the values it already has
-- that day: one range of rollup_dims' keys each, read by either of its indexes alike, so
-- the plan does not hang on statistics (a lookup per value, as an EXISTS, became in a new
-- database a hashed scan of every property row of the table, each batch). Whether each
-- of the batch's values is known, and how many a property has, are counted from these.
SELECT g.i, r.value
FROM unnest($1::bigint[], $2::date[], $3::text[]) WITH ORDINALITY AS g(site_id, day, key, i)
CROSS JOIN LATERAL (SELECT value FROM rollup_dims r
                    WHERE r.site_id = g.site_id AND r.day = g.day AND r.dim = 16 AND r.key = g.key) r
