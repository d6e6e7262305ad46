ALTER TABLE visitor_days ADD COLUMN added bigint[] NOT NULL DEFAULT '{}';
