DROP INDEX IF EXISTS events_site_path_ts;
DROP INDEX IF EXISTS rollup_visits_dim_day;
DROP INDEX IF EXISTS rollup_dims_dim_day;
