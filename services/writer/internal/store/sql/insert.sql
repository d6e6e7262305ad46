-- A rebuild of a site's rollups holds this lock exclusively; writers share it, so they
-- never block each other and a rebuild sees every event whose rollups it replaces.
SELECT pg_advisory_xact_lock_shared(1751220853, (s.site_id % 2147483647)::int)
FROM (SELECT DISTINCT site_id FROM staging_events ORDER BY 1) s;

-- Events of sites deleted meanwhile are left behind; ON CONFLICT skips events stored
-- before, which is what makes a redelivery a no-op; RETURNING feeds the rollups with only
-- the rows actually inserted.
WITH ins AS (
    INSERT INTO events
    SELECT DISTINCT ON (s.site_id, s.ts, s.id) s.* FROM staging_events s
    WHERE EXISTS (SELECT 1 FROM sites WHERE sites.id = s.site_id)
    ON CONFLICT DO NOTHING
    RETURNING *
)
INSERT INTO new_events
SELECT ins.*, (ins.ts AT TIME ZONE st.timezone)::date
FROM ins JOIN sites st ON st.id = ins.site_id;
