-- A visitor's first sightings move from visitor_days (one row per visitor and day) onto
-- its visits: a batch writes one row per new visit instead of two, and reads a
-- visitor's visits and sightings in one go. Each sighting keeps 48 bits of its hash
-- and names its local day in the low 16 (days since 1970, modulo 2^16); it is on one
-- of the visitor's visits overlapping that day, and only the visitor's whole set counts.
ALTER TABLE visits ADD COLUMN seen bigint[] NOT NULL DEFAULT '{}';

-- Each visitor-day's sightings, tagged with their day, go onto the visitor's earliest
-- visit overlapping that local day or the hour after it (an hour's sighting is tagged
-- with the day the hour starts on), where the writer looks for them. A visitor-day with
-- no such visit (none is written that way) is dropped.
WITH tagged AS (
    SELECT vd.site_id, vd.visitor_id, vd.day,
           array_agg((h & -65536) | ((vd.day - date '1970-01-01') & 65535)) AS seen
    FROM visitor_days vd, unnest(vd.seen) AS h
    GROUP BY 1, 2, 3
), target AS (
    SELECT t.site_id, t.visitor_id, t.seen,
           (SELECT min(v.started_at) FROM visits v
            WHERE v.site_id = t.site_id AND v.visitor_id = t.visitor_id
              AND v.ended_at >= t.day::timestamp AT TIME ZONE s.timezone
              AND v.started_at < (t.day + 1)::timestamp AT TIME ZONE s.timezone + interval '1 hour') AS started_at
    FROM tagged t JOIN sites s ON s.id = t.site_id
), grouped AS (
    SELECT t.site_id, t.visitor_id, t.started_at, array_agg(h) AS seen
    FROM target t, unnest(t.seen) AS h
    WHERE t.started_at IS NOT NULL
    GROUP BY 1, 2, 3
)
UPDATE visits v SET seen = g.seen
FROM grouped g
WHERE v.site_id = g.site_id AND v.visitor_id = g.visitor_id AND v.started_at = g.started_at;

DROP TABLE visitor_days;
