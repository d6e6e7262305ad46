ALTER TABLE rollup_visits DROP CONSTRAINT rollup_visits_pkey;
ALTER TABLE rollup_visits ADD PRIMARY KEY (site_id, day, dim, value);
CREATE INDEX rollup_visits_dim_day ON rollup_visits (site_id, dim, day);
