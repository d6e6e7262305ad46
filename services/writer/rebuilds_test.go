package writer

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/services/writer/internal/store"
)

// zoneSite is a site in UTC with pageviews and custom events over three days, a few
// hours either side of midnight UTC, so that moving it to another zone moves events
// across days.
func zoneSite(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	site := pgtest.NewSite(t, pool, "UTC")
	st, err := store.New(pool)
	if err != nil {
		t.Fatal(err)
	}
	var batch []event.Event
	start := time.Date(2026, 6, 12, 0, 0, 0, 0, time.UTC)
	for i := range 72 {
		at := start.Add(time.Duration(i)*time.Hour + 7*time.Minute)
		name := "pageview"
		if i%5 == 0 {
			name = "signup"
		}
		e, err := event.New(at, site, name)
		if err != nil {
			t.Fatal(err)
		}
		e.Visitor, e.Path = int64(i%7+1), "/p"
		batch = append(batch, e)
	}
	if _, err := st.Write(context.Background(), batch); err != nil {
		t.Fatal(err)
	}
	return site
}

// rollupDays is the site's rollups per local day (pageviews, custom events), and the
// same recounted from raw events in zone.
func rollupDays(t *testing.T, pool *pgxpool.Pool, site int64, zone string) (rollups, recount string) {
	t.Helper()
	ctx := context.Background()
	if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(day || ' ' || pageviews || ' ' || events, ', ' ORDER BY day), '')
		FROM rollup_dims WHERE site_id = $1 AND dim = 0`, site).Scan(&rollups); err != nil {
		t.Fatal(err)
	}
	if err := pool.QueryRow(ctx, `SELECT string_agg(day || ' ' || pageviews || ' ' || events, ', ' ORDER BY day) FROM (
		SELECT (ts AT TIME ZONE $2)::date AS day, count(*) FILTER (WHERE name = 'pageview') AS pageviews,
		       count(*) FILTER (WHERE name NOT IN ('pageview', 'engagement')) AS events
		FROM events WHERE site_id = $1 GROUP BY 1) d`, site, zone).Scan(&recount); err != nil {
		t.Fatal(err)
	}
	return rollups, recount
}

// moveSite changes the site's zone and asks for the rebuild, as a change on the site's
// settings page does (account.Store.UpdateSite).
func moveSite(t *testing.T, pool *pgxpool.Pool, site int64, zone string) {
	t.Helper()
	if _, err := pool.Exec(context.Background(), `UPDATE sites SET timezone = $2 WHERE id = $1`, site, zone); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(context.Background(), `INSERT INTO rollup_rebuilds (site_id) VALUES ($1)
		ON CONFLICT (site_id) DO UPDATE SET requested_at = clock_timestamp()`, site); err != nil {
		t.Fatal(err)
	}
}

func requests(t *testing.T, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM rollup_rebuilds`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func newRebuilder(t *testing.T, pool *pgxpool.Pool) *rebuilder {
	t.Helper()
	result, err := newRebuildMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &rebuilder{pool: pool, log: slog.New(slog.NewTextHandler(io.Discard, nil)), result: result}
}

// TestTimezoneChangeRebuildsRollups: a running writer takes up the rebuild a change of
// zone asked for, and the site's days are then those of its new zone, each event counted
// once; the request is gone.
func TestTimezoneChangeRebuildsRollups(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.RebuildPoll = 50 * time.Millisecond })
	site := zoneSite(t, h.pool)
	moveSite(t, h.pool, site, "Asia/Tokyo")
	before, want := rollupDays(t, h.pool, site, "Asia/Tokyo")
	if before == want {
		t.Fatalf("rollups in UTC match a recount in Tokyo before any rebuild: the test shows nothing\n%s", before)
	}
	stop := h.run(t)
	defer stop()
	waitFor(t, 30*time.Second, "the rebuild request to be done", func() bool { return requests(t, h.pool) == 0 })
	if got, want := rollupDays(t, h.pool, site, "Asia/Tokyo"); got != want {
		t.Fatalf("rollups per Tokyo day (pageviews events) after the rebuild:\ngot  %s\nwant %s", got, want)
	}
	if n := testutil.ToFloat64(h.svc.rebuilds.result.WithLabelValues(rebuildDone)); n != 1 {
		t.Fatalf("rebuilds done: %v, want 1", n)
	}
}

// TestRebuildAskedAgainRunsAgain: a zone changed again while its rebuild runs is rebuilt
// once more, in the zone the site has by then.
func TestRebuildAskedAgainRunsAgain(t *testing.T) {
	db := pgtest.New(t)
	site := zoneSite(t, db.Pool)
	moveSite(t, db.Pool, site, "Asia/Tokyo")
	r := newRebuilder(t, db.Pool)
	chunks := 0
	r.chunkDone = func(int64) {
		if chunks++; chunks == 1 {
			moveSite(t, db.Pool, site, "America/New_York")
		}
	}
	n, err := r.runPending(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("runPending: %d rebuilds, err %v; want 2", n, err)
	}
	if left := requests(t, db.Pool); left != 0 {
		t.Fatalf("%d requests left", left)
	}
	if got, want := rollupDays(t, db.Pool, site, "America/New_York"); got != want {
		t.Fatalf("rollups per New York day after the second run:\ngot  %s\nwant %s", got, want)
	}
}

// TestRebuildLeasesAndRetries: a request another writer holds is left alone until its
// lease runs out; a rebuild that fails keeps its request, with the error, put off; it is
// taken up again once due.
func TestRebuildLeasesAndRetries(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	site := zoneSite(t, db.Pool)
	moveSite(t, db.Pool, site, "Asia/Tokyo")
	r := newRebuilder(t, db.Pool)
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE rollup_rebuilds SET leased_until = now() + interval '1 hour'`)
	if n, err := r.runPending(ctx); err != nil || n != 0 {
		t.Fatalf("runPending with the request leased elsewhere: %d, %v; want 0", n, err)
	}
	if got, want := rollupDays(t, db.Pool, site, "Asia/Tokyo"); got == want {
		t.Fatal("rebuilt under another writer's lease")
	}

	// A zone Postgres and Go cannot read fails the rebuild.
	exec(`UPDATE sites SET timezone = 'Nowhere/Atlantis' WHERE id = $1`, site)
	exec(`UPDATE rollup_rebuilds SET leased_until = now() - interval '1 second'`)
	if n, err := r.runPending(ctx); err != nil || n != 1 {
		t.Fatalf("runPending with a lease run out: %d, %v; want 1 taken", n, err)
	}
	var lastErr string
	var due bool
	if err := db.Pool.QueryRow(ctx, `SELECT last_error, leased_until > now() + interval '50 seconds' FROM rollup_rebuilds WHERE site_id = $1`,
		site).Scan(&lastErr, &due); err != nil {
		t.Fatalf("request after a failed rebuild: %v", err)
	}
	if lastErr == "" || !due {
		t.Fatalf("failed rebuild: last_error %q, put off a minute or more: %v", lastErr, due)
	}
	if n := testutil.ToFloat64(r.result.WithLabelValues(rebuildFailed)); n != 1 {
		t.Fatalf("rebuilds failed: %v, want 1", n)
	}
	if n, err := r.runPending(ctx); err != nil || n != 0 {
		t.Fatalf("runPending while the failed rebuild is put off: %d, %v; want 0", n, err)
	}

	exec(`UPDATE sites SET timezone = 'Asia/Tokyo' WHERE id = $1`, site)
	exec(`UPDATE rollup_rebuilds SET leased_until = now() - interval '1 second'`)
	if n, err := r.runPending(ctx); err != nil || n != 1 {
		t.Fatalf("runPending once due: %d, %v; want 1", n, err)
	}
	if left := requests(t, db.Pool); left != 0 {
		t.Fatalf("%d requests left", left)
	}
	if got, want := rollupDays(t, db.Pool, site, "Asia/Tokyo"); got != want {
		t.Fatalf("rollups per Tokyo day after the retry:\ngot  %s\nwant %s", got, want)
	}
}
