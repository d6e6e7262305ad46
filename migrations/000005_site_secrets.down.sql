ALTER TABLE sites DROP COLUMN secret_hash;
