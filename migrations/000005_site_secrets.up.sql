-- A per-site secret key for server-side senders of the batch endpoint. Only its SHA-256
-- is kept; the registry mirror publishes the hash so ingest can check a presented secret
-- without a database. NULL means the site has no secret. Setting or rotating it is an
-- UPDATE, so the sites trigger notifies the mirrors as for any other change.
ALTER TABLE sites ADD COLUMN secret_hash bytea UNIQUE CHECK (secret_hash IS NULL OR length(secret_hash) = 32);
