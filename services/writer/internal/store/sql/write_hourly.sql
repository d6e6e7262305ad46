-- Adds a batch's per-hour counts, aggregated in the writer, to rollup_hourly.
INSERT INTO rollup_hourly AS r (site_id, hour, pageviews, events, visitors)
SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[])
-- Rows come sorted by key: one lock order for every writer keeps concurrent upserts
-- from deadlocking.
ON CONFLICT (site_id, hour) DO UPDATE SET
    pageviews = r.pageviews + excluded.pageviews,
    events    = r.events + excluded.events,
    visitors  = r.visitors + excluded.visitors
