package all

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestAdminCommands runs the operators' commands the way scripts do and checks what they
// print and store.
func TestAdminCommands(t *testing.T) {
	db := pgtest.New(t)
	env := mapEnv(map[string]string{"HARU_DATABASE_URL": db.URL, "HARU_HTTP_ADDR": ":4999"})
	ctx := context.Background()
	run := func(args ...string) (string, error) {
		var out strings.Builder
		err := Main(ctx, append([]string{"admin"}, args...), env, &out)
		return out.String(), err
	}

	if out, err := run("migrate"); err != nil || !strings.Contains(out, "schema version") {
		t.Fatalf("migrate: %q, %v", out, err)
	}
	if out, err := run("migrate", "-h"); err != nil || !strings.Contains(out, "-email") {
		t.Fatalf("migrate -h: %q, %v; want the flags and no error", out, err)
	}
	if _, err := run("create-site-secret", "-site", "1", "extra"); err == nil || !strings.Contains(err.Error(), "unexpected arguments") {
		t.Fatalf("a stray argument: %v, want it refused", err)
	}
	if _, err := run("seed-events", "-site", "999999", "-events", "10"); err == nil || !strings.Contains(err.Error(), "no such site") {
		t.Fatalf("seeding a missing site: %v, want \"no such site\"", err)
	}
	if _, err := run("frobnicate"); err == nil || !strings.Contains(err.Error(), "unknown admin command") {
		t.Fatalf("an unknown command: %v", err)
	}
	if _, err := run("create-user", "-email", "ops@example.com", "-password", "a-long-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("create-user", "-email", "OPS@example.com", "-password", "a-long-password"); err == nil {
		t.Fatal("duplicate email (other case) accepted")
	}
	if _, err := run("create-user", "-email", "short@example.com", "-password", "short"); err == nil {
		t.Fatal("short password accepted")
	}
	out, err := run("create-site", "-email", "ops@example.com", "-name", "Blog", "-domain", "https://Blog.Example.com/", "-timezone", "Europe/Berlin")
	if err != nil || !strings.Contains(out, "token=") {
		t.Fatalf("create-site: %q, %v", out, err)
	}
	var domain, tz string
	if err := db.Pool.QueryRow(ctx, `SELECT domain, timezone FROM sites WHERE name = 'Blog'`).Scan(&domain, &tz); err != nil {
		t.Fatal(err)
	}
	if domain != "blog.example.com" || tz != "Europe/Berlin" {
		t.Fatalf("stored site %q %q", domain, tz)
	}
	if _, err := run("create-site", "-email", "ops@example.com", "-name", "X", "-domain", "x.com", "-timezone", "Mars/Base"); err == nil {
		t.Fatal("unknown timezone accepted")
	}
	key, err := run("create-api-key", "-email", "ops@example.com")
	if err != nil || !strings.HasPrefix(key, "haru_") {
		t.Fatalf("create-api-key: %q, %v", key, err)
	}
	if _, err := run("reset-password", "-email", "ops@example.com", "-password", "another-long-one"); err != nil {
		t.Fatal(err)
	}

	// seed-demo is idempotent: one user, one site, one "demo" key however often it runs.
	for range 2 {
		out, err := run("seed-demo")
		if err != nil || !strings.Contains(out, "curl -i -X POST 'http://127.0.0.1:4999/api/collect'") {
			t.Fatalf("seed-demo: %q, %v", out, err)
		}
	}
	var users, sites, keys int
	if err := db.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM users WHERE lower(email) = $1),
		(SELECT count(*) FROM sites WHERE domain = $2),
		(SELECT count(*) FROM api_keys WHERE name = 'demo')`, DemoEmail, DemoDomain).Scan(&users, &sites, &keys); err != nil {
		t.Fatal(err)
	}
	if users != 1 || sites != 1 || keys != 1 {
		t.Fatalf("after two seeds: %d users, %d sites, %d demo keys; want 1 each", users, sites, keys)
	}

	if out, err := run("rebuild-rollups", "-site", "1", "-from", "2026-11-01", "-to", "2026-11-02"); err != nil || !strings.Contains(out, "rebuilt") {
		t.Fatalf("rebuild-rollups: %q, %v", out, err)
	}
	for _, bad := range [][]string{{"rebuild-rollups", "-site", "1"}, {"create-site", "-email", "ops@example.com"}, {"frobnicate"}} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestStrayArgumentRefused: `haru migrate` (admin forgotten) names the mistake instead of
// starting the whole system.
func TestStrayArgumentRefused(t *testing.T) {
	var out strings.Builder
	err := Main(context.Background(), []string{"migrate"}, mapEnv(map[string]string{}), &out)
	if err == nil || !strings.Contains(err.Error(), "haru admin migrate") {
		t.Fatalf("haru migrate: %v, want an error naming haru admin migrate", err)
	}
}

// TestRebuildRollupsInChunks: rebuild-rollups rebuilds a range one transaction per chunk
// of days, and the rollups it leaves equal those of a rebuild in larger chunks (here the
// seeder's, three days at once).
func TestRebuildRollupsInChunks(t *testing.T) {
	db, run, site, id := adminSite(t, "America/New_York")
	ctx := context.Background()
	if out, err := run("seed-events", "-site", id, "-events", "3000", "-days", "3", "-chunk-days", "3"); err != nil {
		t.Fatalf("seed-events: %q, %v", out, err)
	}
	const snapshot = `SELECT
		coalesce((SELECT string_agg(concat_ws(' ', day, dim, key, value, pageviews, events, visitors), ';' ORDER BY day, dim, key, value) FROM rollup_dims WHERE site_id = $1), '') || '|' ||
		coalesce((SELECT string_agg(concat_ws(' ', hour, pageviews, events, visitors), ';' ORDER BY hour) FROM rollup_hourly WHERE site_id = $1), '') || '|' ||
		coalesce((SELECT string_agg(concat_ws(' ', day, dim, value, visits, bounces, duration_ms), ';' ORDER BY day, dim, value) FROM rollup_visits WHERE site_id = $1), '')`
	var want, got string
	if err := db.Pool.QueryRow(ctx, snapshot, site).Scan(&want); err != nil {
		t.Fatal(err)
	}
	if len(want) < 1000 {
		t.Fatalf("seeded rollups look empty: %q", want)
	}
	for _, table := range []string{"rollup_dims", "rollup_hourly", "rollup_visits"} {
		if _, err := db.Pool.Exec(ctx, `DELETE FROM `+table+` WHERE site_id = $1`, site); err != nil {
			t.Fatal(err)
		}
	}

	loc, _ := time.LoadLocation("America/New_York")
	today := time.Now().In(loc)
	from, to := today.AddDate(0, 0, -4).Format(time.DateOnly), today.AddDate(0, 0, 1).Format(time.DateOnly)
	out, err := run("rebuild-rollups", "-site", id, "-from", from, "-to", to)
	if err != nil {
		t.Fatalf("rebuild-rollups: %q, %v", out, err)
	}
	if n := strings.Count(out, "rebuilt for"); n != 6 {
		t.Fatalf("rebuild-rollups of 6 days in 1-day chunks printed %d chunks:\n%s", n, out)
	}
	if err := db.Pool.QueryRow(ctx, snapshot, site).Scan(&got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("rollups after a rebuild in 1-day chunks differ from the seeder's 3-day rebuild:\ngot  %.300s\nwant %.300s", got, want)
	}
	if _, err := run("rebuild-rollups", "-site", id, "-from", from, "-to", to, "-chunk-days", "0"); err == nil {
		t.Fatal("-chunk-days 0 accepted")
	}
}

// TestRebuildAllAfterTimezoneChange: after a site moves to another timezone, a rebuild
// of one day leaves the days around it in the old zone's buckets, so some events count
// twice or not at all; rebuild-rollups -all buckets every event anew, once.
func TestRebuildAllAfterTimezoneChange(t *testing.T) {
	db, run, site, id := adminSite(t, "UTC")
	ctx := context.Background()
	if out, err := run("rebuild-rollups", "-site", id, "-all"); err != nil || !strings.Contains(out, "no raw events") {
		t.Fatalf("rebuild-rollups -all of a site without events: %q, %v", out, err)
	}
	if out, err := run("seed-events", "-site", id, "-events", "3000", "-days", "4", "-chunk-days", "5"); err != nil {
		t.Fatalf("seed-events: %q, %v", out, err)
	}
	// The change as the settings page makes it: the zone, and a request for a rebuild.
	if _, err := db.Pool.Exec(ctx, `UPDATE sites SET timezone = 'Asia/Tokyo' WHERE id = $1`, site); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO rollup_rebuilds (site_id) VALUES ($1)`, site); err != nil {
		t.Fatal(err)
	}
	requests := func() (n int) {
		t.Helper()
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM rollup_rebuilds WHERE site_id = $1`, site).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Per local day in Tokyo: the pageviews and events the rollups hold, and a recount
	// from the raw events.
	const days = `SELECT coalesce(string_agg(day || ' ' || pageviews || ' ' || events, ', ' ORDER BY day), '') FROM rollup_dims WHERE site_id = $1 AND dim = 0`
	const recount = `SELECT string_agg(day || ' ' || pageviews || ' ' || events, ', ' ORDER BY day) FROM (
		SELECT (ts AT TIME ZONE 'Asia/Tokyo')::date AS day, count(*) FILTER (WHERE name = 'pageview') AS pageviews,
		       count(*) FILTER (WHERE name NOT IN ('pageview', 'engagement')) AS events
		FROM events WHERE site_id = $1 GROUP BY 1) d`
	read := func(sql string) string {
		t.Helper()
		var s string
		if err := db.Pool.QueryRow(ctx, sql, site).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := read(recount)
	loc, _ := time.LoadLocation("Asia/Tokyo")
	middle := time.Now().In(loc).AddDate(0, 0, -2).Format(time.DateOnly)
	if _, err := run("rebuild-rollups", "-site", id, "-from", middle, "-to", middle); err != nil {
		t.Fatal(err)
	}
	if got := read(days); got == want {
		t.Fatalf("rollups after rebuilding one day in the new zone match a recount in it: the test shows nothing\n%s", got)
	}
	if n := requests(); n != 1 {
		t.Fatalf("a rebuild of one day settled the request for all: %d left", n)
	}
	out, err := run("rebuild-rollups", "-site", id, "-all", "-chunk-days", "3")
	if err != nil {
		t.Fatalf("rebuild-rollups -all: %q, %v", out, err)
	}
	if got := read(days); got != want {
		t.Fatalf("rollups after rebuild-rollups -all (per Tokyo day: pageviews events):\ngot  %s\nwant %s\n%s", got, want, out)
	}
	if n := requests(); n != 0 {
		t.Fatalf("the request for a rebuild is left after rebuild-rollups -all: %d", n)
	}
	if _, err := run("rebuild-rollups", "-site", id, "-all", "-from", middle); err == nil {
		t.Fatal("-all with -from accepted")
	}
	if _, err := run("rebuild-rollups", "-all"); err == nil {
		t.Fatal("-all without -site accepted")
	}
	if _, err := run("rebuild-rollups", "-site", "999999", "-all"); err == nil || !strings.Contains(err.Error(), "999999") {
		t.Fatalf("-all for a site that does not exist: %v", err)
	}
}

// adminSite creates a database, a user and a site in timezone tz through the admin
// commands, and returns the runner with the site's id (also as text).
func adminSite(t *testing.T, tz string) (db *pgtest.DB, run func(args ...string) (string, error), site int64, id string) {
	t.Helper()
	db = pgtest.New(t)
	run = adminRunner(db.URL)
	if _, err := run("create-user", "-email", "ops@example.com", "-password", "a-long-password"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("create-site", "-email", "ops@example.com", "-name", "Shop", "-domain", "shop.example.com", "-timezone", tz); err != nil {
		t.Fatal(err)
	}
	if err := db.Pool.QueryRow(context.Background(), `SELECT id FROM sites WHERE name = 'Shop'`).Scan(&site); err != nil {
		t.Fatal(err)
	}
	return db, run, site, strconv.FormatInt(site, 10)
}

// adminRunner runs `haru admin` commands against the database at dbURL and returns what
// each printed.
func adminRunner(dbURL string) func(args ...string) (string, error) {
	env := mapEnv(map[string]string{"HARU_DATABASE_URL": dbURL})
	return func(args ...string) (string, error) {
		var out strings.Builder
		err := Main(context.Background(), append([]string{"admin"}, args...), env, &out)
		return out.String(), err
	}
}
