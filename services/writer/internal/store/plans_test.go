package store

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestKeyLookupsUseTheKey: the writer's statements that find rows by a batch's keys
// (visit rollups left at zero, visits merged away, the values of the batch's properties)
// look each key up by an index on all its columns, also in a new database whose tables
// Postgres has no statistics of yet. With rollup_visits' former key (site, day, dim, value)
// beside an index on (site, dim, day), Postgres took the narrower index there and read
// every value of the day for each key; the properties' values, read by an EXISTS per
// value, were a hashed scan of every property row of rollup_dims.
func TestKeyLookupsUseTheKey(t *testing.T) {
	st, pool := newStoreOneConn(t)
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read only
	for _, sql := range append(noJoinsOverTables,
		// Rows, and no statistics of them: autovacuum would analyze the tables.
		`ALTER TABLE rollup_visits SET (autovacuum_enabled = false)`,
		`ALTER TABLE visits SET (autovacuum_enabled = false)`,
		`ALTER TABLE rollup_dims SET (autovacuum_enabled = false)`,
		`INSERT INTO rollup_dims (site_id, day, dim, key, value, events)
		 SELECT 1, '2026-06-01'::date + d, 16, k, v::text, 1
		 FROM generate_series(0, 6) d, unnest('{amount,plan,path}'::text[]) k, generate_series(1, 500) v`,
		`INSERT INTO rollup_visits (site_id, day, dim, value, visits)
		 SELECT 1, '2026-06-01'::date + d, dim, '/p/' || v, 1
		 FROM generate_series(0, 6) d, generate_series(0, 2) dim, generate_series(1, 2000) v`,
		`INSERT INTO visits (site_id, visitor_id, started_at, ended_at, day, pageviews, events, engagement_ms,
		                     entry_page, entry_at, exit_page, exit_at, seen)
		 SELECT 1, v, ts, ts, ts::date, 1, 0, 0, '/', ts, '/', ts, '{}'
		 FROM generate_series(1, 20000) v, LATERAL (SELECT '2026-06-01'::timestamptz + v * interval '30 seconds') t(ts)`,
		`SET LOCAL plan_cache_mode = force_generic_plan`,
	) {
		if _, err := tx.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	for _, tt := range []struct {
		name, sql, args string
		want, not       []string
	}{
		{"drop_empty_visit_rollups", st.q.dropEmptyVisitRollups, `'{1}', '{2026-06-03}', '{1}', '{/p/5}'`,
			[]string{"using rollup_visits_pkey", "(value = k.value)"}, nil},
		{"delete_visits", st.q.deleteVisits, `'{1}', '{5}', '{2026-06-01 00:02:30+00}'`,
			[]string{"using visits_pkey", "(started_at = k.started_at)"}, nil},
		{"read_props", st.q.readProps, `'{1}', '{2026-06-03}', '{amount}'`,
			[]string{"Index Cond:", "(key = g.key)", "(day = g.day)"}, []string{"Seq Scan", "Recheck Cond: (dim = 16)"}},
	} {
		if _, err := tx.Exec(ctx, "PREPARE "+tt.name+" AS "+tt.sql); err != nil {
			t.Fatalf("prepare %s: %v", tt.name, err)
		}
		p := explain(t, tx, "EXPLAIN EXECUTE "+tt.name+"("+tt.args+")")
		for _, w := range tt.want {
			if !strings.Contains(p, w) {
				t.Errorf("%s: want each key looked up by an index on all its columns (%s); plan:\n%s", tt.name, w, p)
				break
			}
		}
		for _, n := range tt.not {
			if strings.Contains(p, n) {
				t.Errorf("%s: reads more than the keys' rows (%s); plan:\n%s", tt.name, n, p)
			}
		}
	}
}

// explain runs an EXPLAIN statement and returns its plan.
func explain(t *testing.T, db interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := db.Query(context.Background(), sql, args...)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	var plan strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return plan.String()
}
