ALTER TABLE rollup_dims SET (fillfactor = 80);
ALTER TABLE rollup_visits SET (fillfactor = 80);
ALTER TABLE rollup_hourly SET (fillfactor = 80);
ALTER TABLE visitor_days SET (fillfactor = 80);
ALTER TABLE visits SET (fillfactor = 80);
