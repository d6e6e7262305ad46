-- Rewrites in place the stored visits that new events extended without moving their
-- start, and appends to a visit the first sightings it now holds ($13[$14[i]:$15[i]],
-- empty when $14[i] > $15[i]): no key changes, so Postgres can update them without
-- touching the indexes.
UPDATE visits v SET ended_at = u.ended_at, day = u.day, pageviews = u.pageviews, events = u.events,
    engagement_ms = u.engagement_ms, entry_page = u.entry_page, entry_at = u.entry_at,
    exit_page = u.exit_page, exit_at = u.exit_at, seen = v.seen || ($13::bigint[])[u.lo:u.hi]
FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::date[],
            $6::int[], $7::int[], $8::bigint[], $9::text[], $10::timestamptz[],
            $11::text[], $12::timestamptz[], $14::int[], $15::int[])
     AS u(site_id, visitor_id, started_at, ended_at, day, pageviews, events,
          engagement_ms, entry_page, entry_at, exit_page, exit_at, lo, hi)
WHERE v.site_id = u.site_id AND v.visitor_id = u.visitor_id AND v.started_at = u.started_at
