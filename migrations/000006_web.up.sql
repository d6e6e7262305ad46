-- Dashboard sessions and share links: owned by the query service's web layer.

-- A session is a random token in an HttpOnly cookie; only its SHA-256 is stored, so a
-- leaked table lets nobody log in.
CREATE TABLE sessions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_user_id ON sessions (user_id);
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- A share link gives a read-only dashboard of one site to whoever holds its slug (and
-- its password, when it has one: an argon2id PHC string).
CREATE TABLE share_links (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id       bigint      NOT NULL REFERENCES sites (id) ON DELETE CASCADE,
    slug          text        NOT NULL UNIQUE CHECK (length(slug) BETWEEN 20 AND 100),
    label         text        NOT NULL DEFAULT '' CHECK (length(label) <= 100),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX share_links_site_id ON share_links (site_id);
