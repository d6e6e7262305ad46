package stats

import (
	"context"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/haru-analytics/haru/pkg/pgutil"
	"github.com/haru-analytics/haru/pkg/proctest"
	"github.com/haru-analytics/haru/pkg/seed"
	"github.com/haru-analytics/haru/services/writer"
)

// BenchmarkDashboard times whole dashboards (summary compared with the previous period,
// series, every panel, online) of one site holding HARU_BENCH_EVENTS events (default
// 1,000,000) over 365 days (see benchSite): 24h, 30d and 12mo, unfiltered from the
// rollups beside the same view from raw events, and with one filter beside the same
// filtered view through the former single statement (rawStatement). Each case starts
// with empty caches; it reports the first view's time, p50 and p95 in ms (the raw
// baseline keeps nothing between views); run with a fixed count, e.g. -benchtime 20x (the raw baseline, the single
// statement and the filtered 12 months run at most HARU_BENCH_RAW_RUNS times, default 3,
// so their ns/op mean nothing).
func BenchmarkDashboard(b *testing.B) {
	n := 1_000_000
	if s := os.Getenv("HARU_BENCH_EVENTS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("HARU_BENCH_EVENTS %q: want a positive count", s)
		}
	}
	ctx := context.Background()
	pool, site := benchSite(b, n)
	defer pool.Close()
	// A running query service holds its connections: open them all before timing views.
	conns := make([]*pgxpool.Conn, pool.Config().MaxConns)
	for i := range conns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		c.Release()
	}
	rawRuns := 3
	if s := os.Getenv("HARU_BENCH_RAW_RUNS"); s != "" {
		rawRuns, _ = strconv.Atoi(s)
	}
	now := time.Now()
	const tz = "Europe/Paris"
	loc, _ := time.LoadLocation(tz)
	info := SiteInfo{ID: site, Timezone: tz}
	for _, period := range []string{"24h", "30d", "12mo"} {
		for _, c := range []struct {
			name, filter string
			raw, ref     bool
		}{
			{"rollups", "", false, false},
			{"raw", "", true, false},
			{"filter", "page:is:/pricing", false, false},
			{"filter-one-statement", "page:is:/pricing", false, true},
		} {
			v := url.Values{"period": {period}}
			if c.filter != "" {
				v.Set("filter", c.filter)
			}
			qu, err := ParseQuery(v, now, now.AddDate(-1, 0, 0), loc, 10, true)
			if err != nil {
				b.Fatal(err)
			}
			qu.Raw = c.raw
			b.Run(period+"/"+c.name, func(b *testing.B) {
				// Each case starts cold: its first view fills the caches of past days.
				q, err := New(pool)
				if err != nil {
					b.Fatal(err)
				}
				if c.raw {
					q.rawPast = newPastCache[rawKey, result](0, 0) // the baseline reads everything each time
				}
				var took []time.Duration
				for b.Loop() {
					if (c.raw || c.ref || c.filter != "" && period == "12mo") && len(took) >= rawRuns {
						continue // raw reads of long ranges are slow: a few runs give their order
					}
					start := time.Now()
					view := q.Dashboard
					if c.ref {
						view = q.referenceDashboard
					}
					if _, err := view(ctx, info, qu, now); err != nil {
						b.Fatal(err)
					}
					took = append(took, time.Since(start))
				}
				b.ReportMetric(ms(took[0]), "first_ms")
				slices.Sort(took)
				b.ReportMetric(ms(took[len(took)/2]), "p50_ms")
				b.ReportMetric(ms(took[(len(took)*95+99)/100-1]), "p95_ms")
			})
		}
	}
}

// benchSite is the benchmark's site and a pool on its database: HARU_BENCH_DATABASE_URL
// with site HARU_BENCH_SITE as seeded before (haru admin seed-events), or else a private
// Postgres seeded here with n events.
func benchSite(b *testing.B, n int) (*pgxpool.Pool, int64) {
	ctx := context.Background()
	if dbURL := os.Getenv("HARU_BENCH_DATABASE_URL"); dbURL != "" {
		site, err := strconv.ParseInt(os.Getenv("HARU_BENCH_SITE"), 10, 64)
		if err != nil {
			b.Fatalf("HARU_BENCH_SITE: %v", err)
		}
		pool, err := pgutil.Open(ctx, dbURL, 8, "bench")
		if err != nil {
			b.Fatal(err)
		}
		var events int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE site_id = $1`, site).Scan(&events); err != nil {
			b.Fatal(err)
		}
		b.Logf("site %d holds %d events", site, events)
		return pool, site
	}
	pg := proctest.StartPostgres(b)
	// The rebuild of a seeded history locks each visitor of its range.
	admin, err := pgutil.Open(ctx, pg.URL("postgres"), 2, "bench")
	if err != nil {
		b.Fatal(err)
	}
	for _, set := range []string{"max_locks_per_transaction = 1024", "shared_buffers = '512MB'", "work_mem = '64MB'"} {
		if _, err := admin.Exec(ctx, "ALTER SYSTEM SET "+set); err != nil {
			b.Fatal(err)
		}
	}
	admin.Close()
	pg.Stop(b)
	pg.Start(b)
	dbURL := pg.URL("haru")
	if _, err := pgutil.EnsureDatabase(ctx, dbURL); err != nil {
		b.Fatal(err)
	}
	pool, err := pgutil.Open(ctx, dbURL, 8, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := pgutil.Migrate(ctx, pool); err != nil {
		b.Fatal(err)
	}
	var site int64
	if err := pool.QueryRow(ctx, `WITH u AS (INSERT INTO users (email, password_hash) VALUES ('bench@example.com', 'x') RETURNING id)
		INSERT INTO sites (user_id, name, domain, token, timezone) SELECT id, 'bench', 'example.com', 'bench-token', 'Europe/Paris' FROM u RETURNING id`).Scan(&site); err != nil {
		b.Fatal(err)
	}
	res, err := seed.Seed(ctx, pool, site, n, 365, time.Now(), 1, func(ctx context.Context, from, to time.Time) error {
		return writer.RebuildRollupsInChunks(ctx, pool, site, from, to, 7, nil)
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("seeded %d events: COPY %s (%.0f events/s), rollups rebuilt %s (%.0f events/s)", res.Events,
		res.Copy.Round(time.Millisecond), float64(res.Events)/res.Copy.Seconds(),
		res.Rebuild.Round(time.Millisecond), float64(res.Events)/res.Rebuild.Seconds())
	if _, err := pool.Exec(ctx, `VACUUM ANALYZE`); err != nil {
		b.Fatal(err)
	}
	return pool, site
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// referenceDashboard computes what Dashboard reads from raw events (the view and the
// previous period's summary, side by side) through rawStatement.
func (q *Querier) referenceDashboard(ctx context.Context, site SiteInfo, qu Query, now time.Time) (Dashboard, error) {
	dims := dashboardDims()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := q.referenceRun(gctx, site.ID, qu, qu.Period, plan{summary: true, series: true, dims: dims, limit: qu.Limit})
		return err
	})
	g.Go(func() error {
		_, err := q.referenceRun(gctx, site.ID, qu, qu.Period.Previous(), plan{summary: true})
		return err
	})
	g.Go(func() error { _, err := q.Online(gctx, site.ID, now); return err })
	return Dashboard{}, g.Wait()
}
