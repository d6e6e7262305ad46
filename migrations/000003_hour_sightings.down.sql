-- Restores hour_visitors from the raw events still kept. The hour hashes left in
-- visitor_days.seen match no dimension value, so they change no count.
ALTER TABLE visitor_days ALTER COLUMN added DROP DEFAULT;

CREATE TABLE hour_visitors (
    site_id    bigint      NOT NULL,
    hour       timestamptz NOT NULL,
    visitor_id bigint      NOT NULL,
    PRIMARY KEY (site_id, hour, visitor_id)
);

INSERT INTO hour_visitors (site_id, hour, visitor_id)
SELECT DISTINCT site_id, date_trunc('hour', ts, 'UTC'), visitor_id FROM events;
