-- Adds a batch's per-hour counts ($4..$7) to rollup_hourly. hour_visitors makes visitors
-- exact: a visitor ($1..$3 lists each (site, hour, visitor) once) adds one only the first
-- time it is stored for that hour.
WITH seen AS (
    INSERT INTO hour_visitors (site_id, hour, visitor_id)
    SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::bigint[])
    ON CONFLICT DO NOTHING
    RETURNING site_id, hour
),
new_visitors AS (
    SELECT site_id, hour, count(*) AS n FROM seen GROUP BY 1, 2
)
INSERT INTO rollup_hourly AS r (site_id, hour, pageviews, events, visitors)
SELECT a.site_id, a.hour, a.pv, a.ev, coalesce(n.n, 0)
FROM unnest($4::bigint[], $5::timestamptz[], $6::bigint[], $7::bigint[]) AS a(site_id, hour, pv, ev)
LEFT JOIN new_visitors n USING (site_id, hour)
-- One lock order for every writer keeps concurrent upserts from deadlocking.
ORDER BY 1, 2
ON CONFLICT (site_id, hour) DO UPDATE SET
    pageviews = r.pageviews + excluded.pageviews,
    events    = r.events + excluded.events,
    visitors  = r.visitors + excluded.visitors
