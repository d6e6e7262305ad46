package all

import (
	"context"
	"strings"
	"testing"

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
