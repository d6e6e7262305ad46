-- Appends first sightings to stored visitor-days: row i gets $4[$5[i]:$6[i]] more. Per-visitor
-- locks are held, so no other writer changes these rows meanwhile.
UPDATE visitor_days vd SET seen = vd.seen || ($4::bigint[])[k.lo:k.hi]
FROM unnest($1::bigint[], $2::date[], $3::bigint[], $5::int[], $6::int[]) AS k(site_id, day, visitor_id, lo, hi)
WHERE vd.site_id = k.site_id AND vd.day = k.day AND vd.visitor_id = k.visitor_id
