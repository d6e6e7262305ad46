-- A filtered view reads the visitors and kinds of the matching events twice more than
-- their other columns (the visits that hold them, and the previous period's summary):
-- with visitor_id and name in the page index both come from an index-only scan.
-- CREATE INDEX on the partitioned table builds every partition's index in turn and
-- blocks inserts into each meanwhile.
DROP INDEX IF EXISTS events_site_path_ts;
CREATE INDEX events_site_path_ts ON events (site_id, path, ts) INCLUDE (visitor_id, name);
