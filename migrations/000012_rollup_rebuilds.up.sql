-- A site's rollups to be rebuilt from its raw events, asked for when its timezone changes
-- (the days written before were bucketed in the old zone). A writer leases the request,
-- rebuilds every day with raw events, and removes it unless it was asked for again
-- meanwhile (requested_at moved on); a writer that stops mid-way leaves the lease to run
-- out, and another starts over.
CREATE TABLE rollup_rebuilds (
    site_id      bigint      PRIMARY KEY REFERENCES sites (id) ON DELETE CASCADE,
    requested_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    leased_until timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);
