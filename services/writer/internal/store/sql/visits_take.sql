-- Takes the stored visits that new_events may join out of visits and their share
-- out of rollup_visits; visits_merge.sql puts them back merged with the new events.
-- The per-visitor locks, taken in one order, keep two writers from merging one visitor
-- at once; this statement's snapshot is taken after they are granted.
SELECT pg_advisory_xact_lock(hashtextextended(t.site_id::text || ':' || t.visitor_id::text, 1751220853))
FROM (SELECT DISTINCT site_id, visitor_id FROM new_events) t
ORDER BY hashtextextended(t.site_id::text || ':' || t.visitor_id::text, 1751220853);

-- Only visits within 30 minutes of the visitor's new events can merge with them.
WITH span AS (
    SELECT site_id, visitor_id,
           min(ts) - interval '30 minutes' AS lo, max(ts) + interval '30 minutes' AS hi
    FROM new_events GROUP BY 1, 2
),
gone AS (
    DELETE FROM visits v
    USING span t
    WHERE v.site_id = t.site_id AND v.visitor_id = t.visitor_id
      AND v.ended_at >= t.lo AND v.started_at <= t.hi
    RETURNING v.*
)
INSERT INTO old_visits SELECT * FROM gone;

INSERT INTO rollup_visits AS r (site_id, day, dim, value, visits, bounces, duration_ms)
SELECT site_id, day, dim, value, -count(*), -count(*) FILTER (WHERE bounce), -sum(duration_ms)
FROM (
    SELECT v.site_id, v.day, d.dim, d.value,
           v.pageviews = 1 AND v.events = 0 AS bounce,
           floor(extract(epoch FROM v.ended_at - v.started_at) * 1000)::bigint + v.engagement_ms AS duration_ms
    FROM old_visits v
    CROSS JOIN LATERAL (VALUES (0::smallint, ''::text), (1, v.entry_page), (2, v.exit_page)) AS d(dim, value)
    WHERE d.value IS NOT NULL
) x
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
ON CONFLICT (site_id, day, dim, value) DO UPDATE SET
    visits      = r.visits + excluded.visits,
    bounces     = r.bounces + excluded.bounces,
    duration_ms = r.duration_ms + excluded.duration_ms;
