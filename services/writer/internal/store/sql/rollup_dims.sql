-- Adds new_events to rollup_dims. Dimension numbers are listed in migration 000002.
-- Visitors are exact: visitor_days keeps, per visitor and day, a hash of every (dim, key,
-- value) the visitor was counted under, and only values it had not seen add to visitors.
WITH props AS (
    SELECT e.site_id, e.day, e.visitor_id, e.name,
           left(p.key, 200) AS key, left(p.value, 1000) AS value
    FROM new_events e CROSS JOIN LATERAL jsonb_each_text(e.props) p
    WHERE e.props IS NOT NULL AND jsonb_typeof(e.props) = 'object'
),
prop_values AS (
    SELECT DISTINCT site_id, day, key, value FROM props
),
prop_known AS (
    SELECT v.*, EXISTS (
        SELECT 1 FROM rollup_dims r
        WHERE r.site_id = v.site_id AND r.day = v.day AND r.dim = 16
          AND r.key = v.key AND r.value = v.value) AS known
    FROM prop_values v
),
prop_used AS (
    SELECT r.site_id, r.day, r.key, count(*) AS n
    FROM rollup_dims r
    JOIN (SELECT DISTINCT site_id, day, key FROM prop_values) k
      ON r.site_id = k.site_id AND r.day = k.day AND r.key = k.key
    WHERE r.dim = 16 AND r.value <> '(other)'
    GROUP BY 1, 2, 3
),
-- Each property keeps at most 1000 distinct values per site and day; new values beyond
-- that count as '(other)', so a property holding ids cannot blow the table up.
prop_map AS (
    SELECT k.site_id, k.day, k.key, k.value,
           CASE WHEN k.known
                  OR row_number() OVER (PARTITION BY k.site_id, k.day, k.key, k.known ORDER BY k.value)
                     <= 1000 - coalesce(u.n, 0)
                THEN k.value ELSE '(other)' END AS mapped
    FROM prop_known k LEFT JOIN prop_used u USING (site_id, day, key)
),
raw_dims AS (
    SELECT e.site_id, e.day, d.dim, ''::text AS key, left(d.value, 1000) AS value, e.visitor_id,
           (e.name = 'pageview')::int AS pv, (e.name NOT IN ('pageview', 'engagement'))::int AS ev
    FROM new_events e
    CROSS JOIN LATERAL (VALUES
        (0::smallint, ''::text),
        (1, e.path), (2, e.hostname), (3, e.ref_source),
        (4, e.utm_source), (5, e.utm_medium), (6, e.utm_campaign), (7, e.utm_term), (8, e.utm_content),
        (9, e.country), (10, e.region), (11, e.browser), (12, e.os), (13, e.device),
        (14, CASE WHEN e.screen_w <= 0 THEN ''
                  WHEN e.screen_w < 576 THEN 'mobile'
                  WHEN e.screen_w < 992 THEN 'tablet'
                  WHEN e.screen_w < 1440 THEN 'laptop'
                  ELSE 'desktop' END),
        (15, e.name)
    ) AS d(dim, value)
    -- Kept out, as no report shows them and each would cost a seen row per visitor and
    -- day: empty UTM fields and regions, and 'pageview' as an event name (dim 0 has it).
    WHERE NOT (d.value = '' AND (d.dim BETWEEN 4 AND 8 OR d.dim = 10))
      AND NOT (d.dim = 15 AND d.value IN ('pageview', 'engagement'))
    UNION ALL
    SELECT p.site_id, p.day, 16::smallint, p.key, m.mapped, p.visitor_id,
           (p.name = 'pageview')::int, (p.name NOT IN ('pageview', 'engagement'))::int
    FROM props p JOIN prop_map m USING (site_id, day, key, value)
),
-- h names a (dim, key, value) in visitor_days.seen.
dims AS (
    SELECT r.*, hashtextextended(r.dim::text || chr(31) || r.key || chr(31) || r.value, 0) AS h
    FROM raw_dims r
),
candidates AS (
    SELECT site_id, day, visitor_id, array_agg(DISTINCT h) AS hs
    FROM dims GROUP BY 1, 2, 3
),
-- The difference is taken against the row as locked by the upsert, so concurrent
-- writers of one visitor never count a value twice.
marked AS (
    INSERT INTO visitor_days AS vd (site_id, day, visitor_id, seen, added)
    SELECT site_id, day, visitor_id, hs, hs FROM candidates
    ORDER BY 1, 2, 3
    ON CONFLICT (site_id, day, visitor_id) DO UPDATE SET
        seen  = vd.seen || ARRAY(SELECT unnest(excluded.seen) EXCEPT SELECT unnest(vd.seen)),
        added = ARRAY(SELECT unnest(excluded.seen) EXCEPT SELECT unnest(vd.seen))
    WHERE NOT vd.seen @> excluded.seen
    RETURNING site_id, day, added
),
added AS MATERIALIZED (
    SELECT m.site_id, m.day, a.h FROM marked m CROSS JOIN LATERAL unnest(m.added) AS a(h)
),
new_visitors AS (
    SELECT site_id, day, h, count(*) AS n FROM added GROUP BY 1, 2, 3
),
agg AS (
    SELECT site_id, day, dim, key, value, h, sum(pv) AS pv, sum(ev) AS ev
    FROM dims GROUP BY 1, 2, 3, 4, 5, 6
)
INSERT INTO rollup_dims AS r (site_id, day, dim, key, value, pageviews, events, visitors)
SELECT a.site_id, a.day, a.dim, a.key, a.value, a.pv, a.ev, coalesce(n.n, 0)
FROM agg a LEFT JOIN new_visitors n USING (site_id, day, h)
-- One lock order for every writer keeps concurrent upserts from deadlocking.
ORDER BY 1, 2, 3, 4, 5
ON CONFLICT (site_id, day, dim, key, value) DO UPDATE SET
    pageviews = r.pageviews + excluded.pageviews,
    events    = r.events + excluded.events,
    visitors  = r.visitors + excluded.visitors;
