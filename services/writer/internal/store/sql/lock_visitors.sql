-- Per-visitor locks keep two writers from merging one visitor's visits or first
-- sightings at once. $1 holds hashtextextended(site_id || ':' || visitor_id, 1751220853),
-- sorted, so every writer locks in one order.
SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) k
