-- Adds a batch's per-day dimension counts, aggregated in the writer, to rollup_dims.
INSERT INTO rollup_dims AS r (site_id, day, dim, key, value, pageviews, events, visitors)
SELECT * FROM unnest($1::bigint[], $2::date[], $3::smallint[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
-- Rows come sorted by key: one lock order for every writer keeps concurrent upserts
-- from deadlocking.
ON CONFLICT (site_id, day, dim, key, value) DO UPDATE SET
    pageviews = r.pageviews + excluded.pageviews,
    events    = r.events + excluded.events,
    visitors  = r.visitors + excluded.visitors
