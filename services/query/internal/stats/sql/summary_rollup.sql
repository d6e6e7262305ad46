-- summary_rollup: headline figures for whole local days [$2, $3) from the rollups.
-- Visitors add each day's exact uniques (ids rotate daily).
SELECT d.pageviews, d.visitors, d.events, v.visits, v.bounces, v.duration_ms
FROM (
    SELECT coalesce(sum(pageviews), 0) AS pageviews,
           coalesce(sum(visitors), 0)  AS visitors,
           coalesce(sum(events), 0)    AS events
    FROM rollup_dims
    WHERE site_id = $1 AND dim = 0 AND key = '' AND value = '' AND day >= $2 AND day < $3
) d, (
    SELECT coalesce(sum(visits), 0)      AS visits,
           coalesce(sum(bounces), 0)     AS bounces,
           coalesce(sum(duration_ms), 0) AS duration_ms
    FROM rollup_visits
    WHERE site_id = $1 AND dim = 0 AND day >= $2 AND day < $3
) v
