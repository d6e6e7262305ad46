-- Stores the seen hashes of visitor-days new to visitor_days: row i gets $4[$5[i]:$6[i]].
-- Per-visitor locks are held, so no other writer adds these rows meanwhile; the conflict
-- clause only keeps a surprise from turning into a data error.
INSERT INTO visitor_days AS vd (site_id, day, visitor_id, seen)
SELECT k.site_id, k.day, k.visitor_id, ($4::bigint[])[k.lo:k.hi]
FROM unnest($1::bigint[], $2::date[], $3::bigint[], $5::int[], $6::int[]) AS k(site_id, day, visitor_id, lo, hi)
ON CONFLICT (site_id, day, visitor_id) DO UPDATE SET seen = excluded.seen
