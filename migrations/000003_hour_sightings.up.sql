-- A visitor's first sighting in a UTC hour (which rollup_hourly.visitors counts) is now
-- kept in visitor_days.seen beside the daily dimension sightings, as the hash of
-- (dim -1, key '', value: the hour's Unix time), in the row of the site-local day the hour
-- starts on. One row write per visitor and day then serves both rollups.
INSERT INTO visitor_days AS vd (site_id, day, visitor_id, seen, added)
SELECT hv.site_id, (hv.hour AT TIME ZONE s.timezone)::date, hv.visitor_id,
       array_agg(hashtextextended('-1' || chr(31) || chr(31) || extract(epoch FROM hv.hour)::bigint::text, 0)),
       '{}'
FROM hour_visitors hv JOIN sites s ON s.id = hv.site_id
GROUP BY 1, 2, 3
ON CONFLICT (site_id, day, visitor_id) DO UPDATE SET seen = vd.seen || excluded.seen;

DROP TABLE hour_visitors;

-- added is no longer written: the writer decides first sightings itself.
ALTER TABLE visitor_days ALTER COLUMN added SET DEFAULT '{}';
