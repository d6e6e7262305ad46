-- A rebuild of a site's rollups, and a site's deletion, hold this lock exclusively
-- (pgutil.LockSite); writers share it, so they never block each other, and a rebuild or a
-- deletion sees every event of the site.
-- $1 is sorted, so every writer locks in one order.
SELECT pg_advisory_xact_lock_shared(1751220853, (s % 2147483647)::int) FROM unnest($1::bigint[]) s
