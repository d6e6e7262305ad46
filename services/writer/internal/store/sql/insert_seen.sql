-- Stores the seen hashes of visitor-days new to visitor_days: row i gets $4[$5[i]:$6[i]].
-- Per-visitor locks are held and the rows were read under them, so none of these exists:
-- a plain insert, without the conflict check's speculative insertion (a third of its
-- cost). Should one exist after all, the unique violation fails the batch for a retry
-- (IsDataError), never a dead letter.
INSERT INTO visitor_days (site_id, day, visitor_id, seen)
SELECT k.site_id, k.day, k.visitor_id, ($4::bigint[])[k.lo:k.hi]
FROM unnest($1::bigint[], $2::date[], $3::bigint[], $5::int[], $6::int[]) AS k(site_id, day, visitor_id, lo, hi)
