-- Per-visitor locks keep two writers from merging one visitor's visits or first
-- sightings at once. Visitors share visitorLockBuckets locks (see apply.go); $1 lists
-- the batch's buckets sorted, so every writer locks in one order.
SELECT pg_advisory_xact_lock(1751220854, k) FROM unnest($1::int[]) k
