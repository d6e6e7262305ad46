-- Adds new_events to rollup_hourly (UTC hours). hour_visitors makes visitors exact: a
-- visitor adds one only the first time it is seen in an hour.
WITH hours AS (
    SELECT site_id, date_trunc('hour', ts, 'UTC') AS hour, visitor_id, name FROM new_events
),
seen AS (
    INSERT INTO hour_visitors (site_id, hour, visitor_id)
    SELECT DISTINCT site_id, hour, visitor_id FROM hours
    ON CONFLICT DO NOTHING
    RETURNING site_id, hour
),
new_visitors AS (
    SELECT site_id, hour, count(*) AS n FROM seen GROUP BY 1, 2
),
agg AS (
    SELECT site_id, hour,
           count(*) FILTER (WHERE name = 'pageview') AS pv,
           count(*) FILTER (WHERE name NOT IN ('pageview', 'engagement')) AS ev
    FROM hours GROUP BY 1, 2
)
INSERT INTO rollup_hourly AS r (site_id, hour, pageviews, events, visitors)
SELECT a.site_id, a.hour, a.pv, a.ev, coalesce(n.n, 0)
FROM agg a LEFT JOIN new_visitors n USING (site_id, hour)
ORDER BY 1, 2
ON CONFLICT (site_id, hour) DO UPDATE SET
    pageviews = r.pageviews + excluded.pageviews,
    events    = r.events + excluded.events,
    visitors  = r.visitors + excluded.visitors;
