-- rollup_visits' key leads with the dimension, as every reader asks for one dimension of
-- a site over a range of days: the key serves them, and rollup_visits_dim_day goes. With
-- two indexes over (site_id, dim, day), Postgres without statistics yet (a new install,
-- a table just created) took the narrower one for the writer's lookups by the whole key
-- and read every value of the day for each.
ALTER TABLE rollup_visits DROP CONSTRAINT rollup_visits_pkey;
ALTER TABLE rollup_visits ADD PRIMARY KEY (site_id, dim, day, value);
DROP INDEX rollup_visits_dim_day;
