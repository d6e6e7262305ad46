-- The (dim, key, value) hashes each visitor was already counted under that day.
SELECT k.i, vd.seen
FROM unnest($1::bigint[], $2::date[], $3::bigint[]) WITH ORDINALITY AS k(site_id, day, visitor_id, i)
JOIN visitor_days vd ON vd.site_id = k.site_id AND vd.day = k.day AND vd.visitor_id = k.visitor_id
