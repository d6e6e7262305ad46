package pgutil_test

import (
	"context"
	"database/sql"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-migrate/migrate/v4"
	migratepgx "github.com/golang-migrate/migrate/v4/database/pgx/v5"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/haru-analytics/haru/migrations"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// TestMigrationsDownAndUp takes a migrated database all the way down and up again: every
// down migration undoes its up migration, so a release can be rolled back.
func TestMigrationsDownAndUp(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	latest := latestVersion(t)
	hot := func() map[string]string {
		t.Helper()
		rows, err := db.Pool.Query(ctx, `SELECT relname, coalesce(array_to_string(reloptions, ','), '')
			FROM pg_class WHERE relname = ANY($1) AND relkind = 'r'`,
			[]string{"rollup_dims", "rollup_visits", "rollup_hourly", "visits"})
		if err != nil {
			t.Fatalf("read table options: %v", err)
		}
		out := map[string]string{}
		var name, opts string
		for rows.Next() {
			if err := rows.Scan(&name, &opts); err != nil {
				t.Fatal(err)
			}
			out[name] = opts
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// The rollups are updated in place batch after batch: room left in each page keeps
	// those updates HOT (no index entries per update).
	for name, opts := range hot() {
		if !strings.Contains(opts, "fillfactor=80") {
			t.Errorf("%s options %q, want fillfactor=80", name, opts)
		}
	}

	m, sqlDB := migrator(t, db)
	if err := m.Down(); err != nil {
		t.Fatalf("down: %v", err)
	}
	if got := tables(t, sqlDB); len(got) != 1 || got[0] != "schema_migrations" {
		t.Fatalf("after down, tables %v; want only schema_migrations", got)
	}

	v, err := pgutil.Migrate(ctx, db.Pool)
	if err != nil {
		t.Fatalf("up again: %v", err)
	}
	if v != latest {
		t.Errorf("version %d after up, want %d", v, latest)
	}
	if got := hot(); len(got) != 4 {
		t.Errorf("rollup tables after up again: %v", got)
	}
}

// migrator steps db's schema through the embedded migrations; sqlDB is its connection.
func migrator(t *testing.T, db *pgtest.DB) (m *migrate.Migrate, sqlDB *sql.DB) {
	t.Helper()
	src, err := iofs.New(migrations.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	sqlDB = stdlib.OpenDBFromPool(db.Pool)
	t.Cleanup(func() { sqlDB.Close() })
	drv, err := migratepgx.WithInstance(sqlDB, &migratepgx.Config{})
	if err != nil {
		t.Fatal(err)
	}
	m, err = migrate.NewWithInstance("iofs", src, "pgx5", drv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, sqlDB
}

func tables(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// latestVersion is the highest migration number in the embedded files.
func latestVersion(t *testing.T) uint {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.up.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %v %v", names, err)
	}
	var latest uint
	for _, n := range names {
		num, _, _ := strings.Cut(n, "_")
		v, err := strconv.ParseUint(num, 10, 32)
		if err != nil {
			t.Fatalf("migration %s: %v", n, err)
		}
		latest = max(latest, uint(v))
	}
	return latest
}

// TestMigrationRenamesAbbreviationZones: migration 10 renames sites in CET, MET, EET and
// WET, which Postgres reads as fixed-offset abbreviations, to the city zones tzdata links
// them to; Postgres then puts their days where Go does, summer time included.
func TestMigrationRenamesAbbreviationZones(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	m, _ := migrator(t, db)
	if err := m.Migrate(9); err != nil {
		t.Fatalf("down to 9: %v", err)
	}
	var user int64
	if err := db.Pool.QueryRow(ctx, `INSERT INTO users (email, password_hash) VALUES ('z@example.com', 'x') RETURNING id`).Scan(&user); err != nil {
		t.Fatal(err)
	}
	zones := map[string]string{"CET": "Europe/Brussels", "MET": "Europe/Brussels", "EET": "Europe/Athens",
		"WET": "Europe/Lisbon", "Europe/Berlin": "Europe/Berlin", "UTC": "UTC"}
	for zone := range zones {
		if _, err := db.Pool.Exec(ctx, `INSERT INTO sites (user_id, name, domain, token, timezone) VALUES ($1, $2, 'z.example', $2, $2)`, user, zone); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Up(); err != nil {
		t.Fatalf("up: %v", err)
	}
	for old, want := range zones {
		var got string
		var offsetHours float64
		if err := db.Pool.QueryRow(ctx, `SELECT timezone, extract(epoch FROM '2026-07-02 12:00'::timestamp - ('2026-07-02 12:00'::timestamp AT TIME ZONE timezone AT TIME ZONE 'UTC')) / 3600
			FROM sites WHERE token = $1`, old).Scan(&got, &offsetHours); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("site in %s: zone %s after the migration, want %s", old, got, want)
		}
		loc, err := time.LoadLocation(got)
		if err != nil {
			t.Fatal(err)
		}
		_, goOffset := time.Date(2026, 7, 2, 12, 0, 0, 0, loc).Zone()
		if float64(goOffset)/3600 != offsetHours {
			t.Errorf("%s in July: Postgres %+.1f h, Go %+.1f h", got, offsetHours, float64(goOffset)/3600)
		}
	}
}

// TestEnsureDatabaseKeywordForm: a DSN of keyword=value pairs, which pgx reads as well as
// a URL, names its database to create too.
func TestEnsureDatabaseKeywordForm(t *testing.T) {
	pgtest.New(t) // fails under CI=true without Postgres
	ctx := context.Background()
	name := "haru_kv_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dsn := "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=" + name
	created, err := pgutil.EnsureDatabase(ctx, dsn)
	if err != nil || !created {
		t.Fatalf("EnsureDatabase(%q) = %v, %v; want it created", dsn, created, err)
	}
	t.Cleanup(func() {
		pool, err := pgutil.Open(ctx, "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", 1, "cleanup")
		if err == nil {
			_, _ = pool.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
			pool.Close()
		}
	})
	if created, err := pgutil.EnsureDatabase(ctx, dsn); err != nil || created {
		t.Fatalf("again: %v, %v; want it found", created, err)
	}
}
