-- summary_raw: headline figures for any instant range [$2, $3) from raw events, for
-- ranges that do not fall on local days (the last 24 hours) and as the benchmark's
-- baseline. Visitors add each local day's uniques, as the rollups do; visits are those
-- that started in the range.
WITH ev AS (
    SELECT name, visitor_id, (ts AT TIME ZONE $4)::date AS day
    FROM events
    WHERE site_id = $1 AND ts >= $2 AND ts < $3
), per_day AS (
    SELECT count(*) FILTER (WHERE name = 'pageview')  AS pageviews,
           count(DISTINCT visitor_id)                 AS visitors,
           count(*) FILTER (WHERE name <> 'pageview' AND name <> 'engagement') AS events
    FROM ev GROUP BY day
), v AS (
    SELECT count(*) AS visits,
           count(*) FILTER (WHERE pageviews = 1 AND events = 0) AS bounces,
           coalesce(sum(floor(extract(epoch FROM ended_at - started_at) * 1000)::bigint + engagement_ms), 0)::bigint AS duration_ms
    FROM visits
    WHERE site_id = $1 AND started_at >= $2 AND started_at < $3
)
SELECT coalesce(sum(pageviews), 0), coalesce(sum(visitors), 0), coalesce(sum(events), 0),
       (SELECT visits FROM v), (SELECT bounces FROM v), (SELECT duration_ms FROM v)
FROM per_day
