DROP FUNCTION IF EXISTS ensure_event_partitions(timestamptz, timestamptz);
DROP TABLE IF EXISTS events;
DROP TABLE IF EXISTS api_keys;
DROP TABLE IF EXISTS sites;
DROP FUNCTION IF EXISTS sites_notify();
DROP FUNCTION IF EXISTS sites_bump_version();
DROP TABLE IF EXISTS users;
