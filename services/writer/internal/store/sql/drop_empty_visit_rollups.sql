-- Entry or exit pages whose visits merged away are left at zero; drop them.
DELETE FROM rollup_visits r
USING unnest($1::bigint[], $2::date[], $3::smallint[], $4::text[]) AS k(site_id, day, dim, value)
WHERE r.site_id = k.site_id AND r.day = k.day AND r.dim = k.dim AND r.value = k.value AND r.visits = 0
