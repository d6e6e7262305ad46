-- Merges old_visits and new_events into visits by the 30-minute rule: pieces (whole
-- stored visits, single new events) sorted by start form one visit until a piece starts
-- more than 30 minutes after the latest end so far.
WITH pieces AS (
    SELECT site_id, visitor_id, started_at AS s, ended_at AS e, pageviews, events,
           engagement_ms, entry_page, entry_at, exit_page, exit_at
    FROM old_visits
    UNION ALL
    SELECT site_id, visitor_id, ts, ts,
           (name = 'pageview')::int, (name NOT IN ('pageview', 'engagement'))::int, duration_ms,
           CASE WHEN name = 'pageview' THEN left(path, 1000) END,
           CASE WHEN name = 'pageview' THEN ts END,
           CASE WHEN name = 'pageview' THEN left(path, 1000) END,
           CASE WHEN name = 'pageview' THEN ts END
    FROM new_events
),
breaks AS (
    SELECT p.*,
           CASE WHEN p.s > max(p.e) OVER (PARTITION BY p.site_id, p.visitor_id ORDER BY p.s, p.e
                                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
                           + interval '30 minutes'
                THEN 1 ELSE 0 END AS brk
    FROM pieces p
),
islands AS (
    SELECT b.*, sum(b.brk) OVER (PARTITION BY b.site_id, b.visitor_id ORDER BY b.s, b.e
                                 ROWS UNBOUNDED PRECEDING) AS isl
    FROM breaks b
),
merged AS (
    SELECT site_id, visitor_id, min(s) AS started_at, max(e) AS ended_at,
           sum(pageviews)::int AS pageviews, sum(events)::int AS events,
           sum(engagement_ms)::bigint AS engagement_ms,
           (array_agg(entry_page ORDER BY entry_at, entry_page) FILTER (WHERE entry_at IS NOT NULL))[1] AS entry_page,
           min(entry_at) AS entry_at,
           (array_agg(exit_page ORDER BY exit_at DESC, exit_page DESC) FILTER (WHERE exit_at IS NOT NULL))[1] AS exit_page,
           max(exit_at) AS exit_at
    FROM islands
    GROUP BY site_id, visitor_id, isl
),
stored AS (
    INSERT INTO visits (site_id, visitor_id, started_at, ended_at, day, pageviews, events,
                        engagement_ms, entry_page, entry_at, exit_page, exit_at)
    SELECT m.site_id, m.visitor_id, m.started_at, m.ended_at,
           (m.started_at AT TIME ZONE st.timezone)::date, m.pageviews, m.events,
           m.engagement_ms, m.entry_page, m.entry_at, m.exit_page, m.exit_at
    FROM merged m JOIN sites st ON st.id = m.site_id
    RETURNING *
)
INSERT INTO rollup_visits AS r (site_id, day, dim, value, visits, bounces, duration_ms)
SELECT site_id, day, dim, value, count(*), count(*) FILTER (WHERE bounce), sum(duration_ms)
FROM (
    SELECT v.site_id, v.day, d.dim, d.value,
           v.pageviews = 1 AND v.events = 0 AS bounce,
           floor(extract(epoch FROM v.ended_at - v.started_at) * 1000)::bigint + v.engagement_ms AS duration_ms
    FROM stored v
    CROSS JOIN LATERAL (VALUES (0::smallint, ''::text), (1, v.entry_page), (2, v.exit_page)) AS d(dim, value)
    WHERE d.value IS NOT NULL
) x
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2, 3, 4
ON CONFLICT (site_id, day, dim, value) DO UPDATE SET
    visits      = r.visits + excluded.visits,
    bounces     = r.bounces + excluded.bounces,
    duration_ms = r.duration_ms + excluded.duration_ms;

-- Entry or exit pages whose visits merged away are left at zero; drop them.
DELETE FROM rollup_visits r
USING (SELECT site_id, min(day) - 2 AS lo, max(day) + 2 AS hi FROM new_events GROUP BY site_id) t
WHERE r.site_id = t.site_id AND r.day BETWEEN t.lo AND t.hi AND r.visits = 0;
