-- Adds the net change of the visits (merged ones minus those taken) to rollup_visits.
INSERT INTO rollup_visits AS r (site_id, day, dim, value, visits, bounces, duration_ms)
SELECT * FROM unnest($1::bigint[], $2::date[], $3::smallint[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
-- Rows come sorted by key: one lock order for every writer keeps concurrent upserts
-- from deadlocking.
ON CONFLICT (site_id, day, dim, value) DO UPDATE SET
    visits      = r.visits + excluded.visits,
    bounces     = r.bounces + excluded.bounces,
    duration_ms = r.duration_ms + excluded.duration_ms
