-- The stored visits of the batch's visitors within a window ($3, $4) that holds those new
-- events may join and those holding the visitor's sightings of the batch's days, with
-- their sightings; near says whether new events may join one, being within 30 minutes
-- of the visitor's new events ($5, $6). Per-visitor locks are held, so they stay as read
-- until the batch's changes replace them.
SELECT v.site_id, v.visitor_id, v.started_at, v.ended_at, v.day, v.pageviews, v.events,
       v.engagement_ms, v.entry_page, v.entry_at, v.exit_page, v.exit_at, v.seen,
       v.ended_at >= t.nlo AND v.started_at <= t.nhi AS near
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[])
     AS t(site_id, visitor_id, lo, hi, nlo, nhi)
JOIN visits v ON v.site_id = t.site_id AND v.visitor_id = t.visitor_id
             AND v.ended_at >= t.lo AND v.started_at <= t.hi
