-- Scratch tables of one batch, gone at commit. staging_events takes the COPY; new_events
-- holds only the rows the insert actually stored, with the site's local day, and is the
-- sole input of every rollup.
CREATE TEMP TABLE staging_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DROP;
CREATE TEMP TABLE new_events (LIKE events) ON COMMIT DROP;
ALTER TABLE new_events ADD COLUMN day date NOT NULL;
-- The rollup statements hash and sort about ten rows per event; keep that in memory.
SET LOCAL work_mem = '32MB';
CREATE TEMP TABLE old_visits (LIKE visits) ON COMMIT DROP;
