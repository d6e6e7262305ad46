DROP INDEX IF EXISTS events_site_path_ts;
CREATE INDEX events_site_path_ts ON events (site_id, path, ts);
