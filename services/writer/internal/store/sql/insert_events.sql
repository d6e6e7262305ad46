-- Stores a batch given as one array per column. ON CONFLICT skips events stored before,
-- which is what makes a redelivery a no-op; RETURNING names the rows actually inserted,
-- the only ones the rollups may count.
INSERT INTO events (site_id, ts, id, name, visitor_id, hostname, path, referrer, ref_source,
                    utm_source, utm_medium, utm_campaign, utm_term, utm_content,
                    country, region, browser, os, device, screen_w, screen_h, duration_ms, props)
SELECT u.site_id, u.ts, u.id, u.name, u.visitor_id, u.hostname, u.path, u.referrer, u.ref_source,
       u.utm_source, u.utm_medium, u.utm_campaign, u.utm_term, u.utm_content,
       u.country, u.region, u.browser, u.os, u.device, u.screen_w, u.screen_h, u.duration_ms, u.props::jsonb
FROM unnest($1::bigint[], $2::timestamptz[], $3::uuid[], $4::text[], $5::bigint[], $6::text[], $7::text[],
            $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
            $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::int[], $21::int[],
            $22::bigint[], $23::text[])
     AS u(site_id, ts, id, name, visitor_id, hostname, path, referrer, ref_source,
          utm_source, utm_medium, utm_campaign, utm_term, utm_content,
          country, region, browser, os, device, screen_w, screen_h, duration_ms, props)
ON CONFLICT DO NOTHING
RETURNING site_id, ts, id
