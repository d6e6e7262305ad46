-- visitor_days.added has not been written since 000003 (the writer decides first
-- sightings itself); every new row still carried it as an empty array.
ALTER TABLE visitor_days DROP COLUMN added;
