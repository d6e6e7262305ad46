-- CET, MET, EET and WET are IANA zones with summer time, but Postgres reads those names
-- as its fixed-offset abbreviations first: the writer (Go) and Postgres's AT TIME ZONE
-- put such a site's days an hour apart in summer. Since tzdata 2024b the four names are
-- links to these zones, so a site keeps the same days under its new name. The sites
-- trigger mirrors the change to ingest's registry.
UPDATE sites SET timezone = CASE timezone
    WHEN 'CET' THEN 'Europe/Brussels'
    WHEN 'MET' THEN 'Europe/Brussels'
    WHEN 'EET' THEN 'Europe/Athens'
    WHEN 'WET' THEN 'Europe/Lisbon'
END
WHERE timezone IN ('CET', 'MET', 'EET', 'WET');
