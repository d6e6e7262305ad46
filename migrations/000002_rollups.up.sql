-- Rollups, maintained by the writer in the same transaction as the event insert and fed
-- only by rows actually inserted, so a redelivered event changes nothing. Dashboards read
-- these instead of raw events; raw partitions may be dropped by retention, rollups stay.

-- A stored event's numbers are never negative; a batch carrying one is split until that
-- event is isolated and dead-lettered.
ALTER TABLE events ADD CONSTRAINT events_nonnegative
    CHECK (screen_w >= 0 AND screen_h >= 0 AND duration_ms >= 0);

-- rollup_hourly: per site per UTC hour. pageviews counts events named 'pageview', events
-- counts every other (custom) event, visitors counts distinct visitors within that hour.
CREATE TABLE rollup_hourly (
    site_id   bigint      NOT NULL,
    hour      timestamptz NOT NULL,
    pageviews bigint      NOT NULL DEFAULT 0,
    events    bigint      NOT NULL DEFAULT 0,
    visitors  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, hour)
);

-- hour_visitors makes rollup_hourly.visitors exact: a visitor adds one only the first
-- time it is seen in an hour.
CREATE TABLE hour_visitors (
    site_id    bigint      NOT NULL,
    hour       timestamptz NOT NULL,
    visitor_id bigint      NOT NULL,
    PRIMARY KEY (site_id, hour, visitor_id)
);

-- rollup_dims: per site per local day (sites.timezone) per dimension value. dim:
--   0 total (value ''): the site's daily pageviews, custom events and unique visitors
--   1 page  2 hostname  3 referrer source  4 utm_source  5 utm_medium  6 utm_campaign
--   7 utm_term  8 utm_content  9 country  10 region  11 browser  12 os  13 device
--   14 screen class ('' | mobile | tablet | laptop | desktop)  15 event name
--   16 custom property: key is the property name, value its value; at most 1000
--      distinct values per property per site per day, the rest count as '(other)'.
-- key is '' for every dim but 16. Values are cut to 1000 characters (keys to 200).
-- Not stored, since no report shows them: empty values of dims 4-8 (UTM) and 10 (region),
-- and 'pageview' under dim 15, which thus counts custom events only.
-- visitors is exact per day: visitor_days records, per visitor and local day, which
-- (dim, key, value) the visitor was already counted under, so only a first sighting adds
-- one, however the visitor's events are spread over batches and writers.
CREATE TABLE rollup_dims (
    site_id   bigint   NOT NULL,
    day       date     NOT NULL,
    dim       smallint NOT NULL,
    key       text     NOT NULL DEFAULT '',
    value     text     NOT NULL,
    pageviews bigint   NOT NULL DEFAULT 0,
    events    bigint   NOT NULL DEFAULT 0,
    visitors  bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, dim, key, value)
);

-- visitor_days: one row per visitor and local day. seen holds a 64-bit hash of every
-- (dim, key, value) the visitor has been counted under that day; one row per visitor
-- instead of one per visitor and value keeps the write cost near one row per event.
-- added is what the latest write added, read back through RETURNING.
CREATE TABLE visitor_days (
    site_id    bigint   NOT NULL,
    day        date     NOT NULL,
    visitor_id bigint   NOT NULL,
    seen       bigint[] NOT NULL,
    added      bigint[] NOT NULL,
    PRIMARY KEY (site_id, day, visitor_id)
);

-- dead_letters keeps events Postgres refused for a data reason, so they leave the
-- stream without being lost. id is the event id, so a redelivery is stored once.
CREATE TABLE dead_letters (
    id         uuid        PRIMARY KEY,
    site_id    bigint      NOT NULL,
    event      jsonb       NOT NULL,
    reason     text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- visits: a visitor's events with no gap over 30 minutes. Kept exact however a visit's
-- events are spread over batches: each batch merges its events with the touched
-- visitors' stored visits. day is the site's local day of started_at; entry and exit are
-- the first and last pageview (NULL without one); duration is ended_at - started_at plus
-- engagement_ms; a bounce has one pageview and no custom event.
CREATE TABLE visits (
    site_id       bigint      NOT NULL,
    visitor_id    bigint      NOT NULL,
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz NOT NULL,
    day           date        NOT NULL,
    pageviews     integer     NOT NULL,
    events        integer     NOT NULL,
    engagement_ms bigint      NOT NULL,
    entry_page    text,
    entry_at      timestamptz,
    exit_page     text,
    exit_at       timestamptz,
    PRIMARY KEY (site_id, visitor_id, started_at)
);
CREATE INDEX visits_site_day ON visits (site_id, day);

-- rollup_visits: per site per local day of a visit's start. dim 0 total (value ''),
-- 1 entry page, 2 exit page. visits, bounces and the summed duration (ms) give the
-- bounce rate and the mean visit duration.
CREATE TABLE rollup_visits (
    site_id     bigint   NOT NULL,
    day         date     NOT NULL,
    dim         smallint NOT NULL,
    value       text     NOT NULL,
    visits      bigint   NOT NULL DEFAULT 0,
    bounces     bigint   NOT NULL DEFAULT 0,
    duration_ms bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (site_id, day, dim, value)
);
