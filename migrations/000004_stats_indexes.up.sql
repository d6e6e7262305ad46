-- Indexes of the stats queries.
-- A dashboard panel reads one dimension of a site's rollups over a range of days; the
-- primary key leads with the day, so without this index each panel would walk every
-- dimension's rows of the range. Counters are not in it, so the writer's upserts of
-- existing rows stay HOT.
CREATE INDEX rollup_dims_dim_day ON rollup_dims (site_id, dim, key, day);
CREATE INDEX rollup_visits_dim_day ON rollup_visits (site_id, dim, day);
-- A filtered view reads raw events; the page filter, the one a click on the pages panel
-- sets, finds its events through this index instead of reading the whole range.
CREATE INDEX events_site_path_ts ON events (site_id, path, ts);
