-- Stores each visitor's updated seen hashes: row i gets $4[$5[i]:$6[i]]. Per-visitor locks
-- are held, so no other writer changes these rows meanwhile. added is no longer used.
INSERT INTO visitor_days AS vd (site_id, day, visitor_id, seen, added)
SELECT k.site_id, k.day, k.visitor_id, ($4::bigint[])[k.lo:k.hi], '{}'
FROM unnest($1::bigint[], $2::date[], $3::bigint[], $5::int[], $6::int[]) AS k(site_id, day, visitor_id, lo, hi)
ON CONFLICT (site_id, day, visitor_id) DO UPDATE SET seen = excluded.seen
