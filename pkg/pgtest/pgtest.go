// Package pgtest gives each test a fresh, migrated Postgres database of its own, cloned
// from a template that is migrated once per schema version.
//
// It uses the server in HARU_TEST_DATABASE_URL (default: the machine's Postgres). Without
// a reachable server a test skips, except under CI=true, where it fails: a silent skip in
// CI would be a lie.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/migrations"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// DefaultServerURL is the test server unless HARU_TEST_DATABASE_URL says otherwise.
const DefaultServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DB is one test's database.
type DB struct {
	// URL connects to the test's own database.
	URL  string
	Name string
	Pool *pgxpool.Pool
}

// ServerURL is the URL of the Postgres server tests use.
func ServerURL() string {
	if u := os.Getenv("HARU_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultServerURL
}

var templateOnce sync.Map // template name → *sync.Once result

type tmplResult struct {
	once sync.Once
	err  error
}

// New creates a fresh database migrated to the latest schema, dropped when the test ends.
func New(t testing.TB) *DB {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		Unavailable(t, err)
		return nil
	}
	defer admin.Close(context.Background())

	tmpl := templateName()
	r, _ := templateOnce.LoadOrStore(tmpl, &tmplResult{})
	res := r.(*tmplResult)
	res.once.Do(func() { res.err = ensureTemplate(ctx, admin, tmpl) })
	if res.err != nil {
		t.Fatalf("pgtest: template: %v", res.err)
	}

	name := "haru_test_" + randHex(6)
	var createErr error
	for attempt := 0; attempt < 20; attempt++ {
		_, createErr = admin.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tmpl))
		// Two clones of one template at the same instant can collide; retry briefly.
		if createErr == nil || !strings.Contains(createErr.Error(), "being accessed by other users") {
			break
		}
		time.Sleep(time.Duration(50+attempt*50) * time.Millisecond)
	}
	if createErr != nil {
		t.Fatalf("pgtest: create database: %v", createErr)
	}
	dbURL := withDatabase(ServerURL(), name)
	pool, err := pgutil.Open(ctx, dbURL, 8, "pgtest")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return &DB{URL: dbURL, Name: name, Pool: pool}
}

// Unavailable skips the test, or fails it under CI=true.
func Unavailable(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("postgres required under CI=true: %v", err)
	}
	t.Skipf("postgres unavailable: %v", err)
}

// templateName is derived from the migrations' content, so a schema change makes a new
// template instead of reusing a stale one.
func templateName() string {
	h := sha256.New()
	names, _ := fs.Glob(migrations.FS, "*.sql")
	sort.Strings(names)
	for _, n := range names {
		b, _ := fs.ReadFile(migrations.FS, n)
		h.Write([]byte(n))
		h.Write(b)
	}
	return "haru_tmpl_" + hex.EncodeToString(h.Sum(nil))[:12]
}

func ensureTemplate(ctx context.Context, admin *pgx.Conn, tmpl string) error {
	// Test binaries of several packages run at once: one builds the template, the others
	// wait on the lock and find it ready.
	if _, err := admin.Exec(ctx, `SELECT pg_advisory_lock(7271001)`); err != nil {
		return fmt.Errorf("lock: %w", err)
	}
	defer admin.Exec(context.Background(), `SELECT pg_advisory_unlock(7271001)`) //nolint:errcheck
	var exists bool
	if err := admin.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)`, tmpl).Scan(&exists); err != nil {
		return fmt.Errorf("look up template: %w", err)
	}
	if exists {
		return nil
	}
	building := tmpl + "_build"
	if _, err := admin.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", building)); err != nil {
		return fmt.Errorf("drop stale build: %w", err)
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return fmt.Errorf("create template: %w", err)
	}
	pool, err := pgutil.Open(ctx, withDatabase(ServerURL(), building), 2, "pgtest")
	if err != nil {
		return err
	}
	_, err = pgutil.Migrate(ctx, pool)
	pool.Close()
	if err != nil {
		return err
	}
	// Renamed only once complete, so a crash never leaves a half-migrated template.
	if _, err := admin.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s RENAME TO %s", building, tmpl)); err != nil {
		return fmt.Errorf("publish template: %w", err)
	}
	return nil
}

func withDatabase(serverURL, name string) string {
	u, err := url.Parse(serverURL)
	if err != nil {
		panic(fmt.Sprintf("pgtest: server url: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// NewSite creates a user and a site in timezone tz, each with unique email and token, and
// returns the site's id: for tests that need a site row and no account logic.
func NewSite(t testing.TB, pool *pgxpool.Pool, tz string) int64 {
	t.Helper()
	ctx := context.Background()
	var id int64
	err := pool.QueryRow(ctx, `
		WITH u AS (INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id)
		INSERT INTO sites (user_id, name, domain, token, timezone)
		SELECT id, 's', 'example.com', $2, $3 FROM u RETURNING id`,
		"u"+randHex(8)+"@example.com", "tok"+randHex(8), tz).Scan(&id)
	if err != nil {
		t.Fatalf("pgtest: create site: %v", err)
	}
	return id
}
