-- Stores the visits that start anew (new visits, or merged ones starting earlier).
INSERT INTO visits (site_id, visitor_id, started_at, ended_at, day, pageviews, events,
                    engagement_ms, entry_page, entry_at, exit_page, exit_at)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[], $4::timestamptz[], $5::date[],
                     $6::int[], $7::int[], $8::bigint[], $9::text[], $10::timestamptz[],
                     $11::text[], $12::timestamptz[])
