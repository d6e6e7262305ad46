-- The stored visits that new events may join: those within 30 minutes of the visitor's
-- new events ($3, $4 are that window). Per-visitor locks are held, so they stay as read
-- until the merged visits replace them.
SELECT v.site_id, v.visitor_id, v.started_at, v.ended_at, v.day, v.pageviews, v.events,
       v.engagement_ms, v.entry_page, v.entry_at, v.exit_page, v.exit_at
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[]) AS t(site_id, visitor_id, lo, hi)
JOIN visits v ON v.site_id = t.site_id AND v.visitor_id = t.visitor_id
             AND v.ended_at >= t.lo AND v.started_at <= t.hi
