DROP TABLE IF EXISTS rollup_visits;
DROP TABLE IF EXISTS visits;
DROP TABLE IF EXISTS dead_letters;
DROP TABLE IF EXISTS visitor_days;
DROP TABLE IF EXISTS rollup_dims;
DROP TABLE IF EXISTS hour_visitors;
DROP TABLE IF EXISTS rollup_hourly;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_nonnegative;
