-- Accounts, sites and API keys: owned by the query service.
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text        NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails compare case-insensitively.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE sites (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    domain         text        NOT NULL CHECK (length(domain) BETWEEN 1 AND 253),
    token          text        NOT NULL UNIQUE,
    timezone       text        NOT NULL DEFAULT 'UTC',
    allow_any_host boolean     NOT NULL DEFAULT false,
    -- version changes on every update so the registry mirror can skip no-op writes.
    version        bigint      NOT NULL DEFAULT 1,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sites_user_id ON sites (user_id);

CREATE FUNCTION sites_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := now();
    RETURN NEW;
END $$;
CREATE TRIGGER sites_bump_version BEFORE UPDATE ON sites
    FOR EACH ROW EXECUTE FUNCTION sites_bump_version();

-- Every change to a site, by any process (a query replica, an admin command, psql),
-- reaches the registry mirrors as a notification carrying the site id.
CREATE FUNCTION sites_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('haru_sites', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER sites_notify AFTER INSERT OR UPDATE OR DELETE ON sites
    FOR EACH ROW EXECUTE FUNCTION sites_notify();

CREATE TABLE api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text        NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- Only a SHA-256 of the key is kept; prefix is shown so users can tell keys apart.
    key_hash     bytea       NOT NULL UNIQUE,
    prefix       text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
CREATE INDEX api_keys_user_id ON api_keys (user_id);

-- Events: written by the writer, partitioned by month of ts. The key includes the
-- partition key; (site_id, ts) leads it so a site's range scans use it too. ts is stamped
-- once at ingest, so a redelivered event collides with its stored row.
CREATE TABLE events (
    site_id      bigint      NOT NULL,
    ts           timestamptz NOT NULL,
    id           uuid        NOT NULL,
    name         text        NOT NULL,
    visitor_id   bigint      NOT NULL,
    hostname     text        NOT NULL DEFAULT '',
    path         text        NOT NULL DEFAULT '',
    referrer     text        NOT NULL DEFAULT '',
    ref_source   text        NOT NULL DEFAULT '',
    utm_source   text        NOT NULL DEFAULT '',
    utm_medium   text        NOT NULL DEFAULT '',
    utm_campaign text        NOT NULL DEFAULT '',
    utm_term     text        NOT NULL DEFAULT '',
    utm_content  text        NOT NULL DEFAULT '',
    country      text        NOT NULL DEFAULT '',
    region       text        NOT NULL DEFAULT '',
    browser      text        NOT NULL DEFAULT '',
    os           text        NOT NULL DEFAULT '',
    device       text        NOT NULL DEFAULT '',
    screen_w     integer     NOT NULL DEFAULT 0,
    screen_h     integer     NOT NULL DEFAULT 0,
    duration_ms  bigint      NOT NULL DEFAULT 0,
    props        jsonb,
    PRIMARY KEY (site_id, ts, id)
) PARTITION BY RANGE (ts);

-- ensure_event_partitions creates the monthly partitions covering [from_ts, to_ts].
-- Safe to call concurrently from several writers.
CREATE FUNCTION ensure_event_partitions(from_ts timestamptz, to_ts timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m       date := date_trunc('month', from_ts AT TIME ZONE 'UTC')::date;
    last    date := date_trunc('month', to_ts AT TIME ZONE 'UTC')::date;
    created integer := 0;
    part    text;
BEGIN
    WHILE m <= last LOOP
        part := format('events_y%sm%s', to_char(m, 'YYYY'), to_char(m, 'MM'));
        IF to_regclass(part) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                    part, (m::timestamp AT TIME ZONE 'UTC'),
                    ((m + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
                created := created + 1;
            EXCEPTION WHEN duplicate_table OR unique_violation THEN
                -- another writer created it first
            END;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN created;
END $$;
