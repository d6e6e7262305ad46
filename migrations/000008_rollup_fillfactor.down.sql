ALTER TABLE rollup_dims RESET (fillfactor);
ALTER TABLE rollup_visits RESET (fillfactor);
ALTER TABLE rollup_hourly RESET (fillfactor);
ALTER TABLE visitor_days RESET (fillfactor);
ALTER TABLE visits RESET (fillfactor);
