-- Removes the stored visits that merged into another one.
DELETE FROM visits v
USING unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) AS k(site_id, visitor_id, started_at)
WHERE v.site_id = k.site_id AND v.visitor_id = k.visitor_id AND v.started_at = k.started_at
