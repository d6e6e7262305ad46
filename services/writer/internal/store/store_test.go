package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/migrations"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

func newEvent(t testing.TB, ts time.Time, site int64, name string, visitor int64) event.Event {
	t.Helper()
	e, err := event.New(ts, site, name)
	if err != nil {
		t.Fatalf("new event: %v", err)
	}
	e.Visitor = visitor
	return e
}

var (
	paths     = []string{"/", "/pricing", "/blog/a", "/blog/b", "/docs"}
	sources   = []string{"", "Google", "news.ycombinator.com", "Twitter"}
	countries = []string{"", "DE", "US", "JP", "IN"}
	browsers  = []string{"Firefox", "Chrome", "Safari"}
	widths    = []int{0, 375, 800, 1280, 1920}
	names     = []string{"pageview", "pageview", "pageview", "signup", "download", event.EngagementName}
)

// randomEvents spreads n events of sites over days days before end, with few visitors so
// that visitors repeat within a day.
func randomEvents(t testing.TB, r *rand.Rand, sites []int64, n int, end time.Time, days int) []event.Event {
	t.Helper()
	out := make([]event.Event, 0, n)
	for range n {
		ts := end.Add(-time.Duration(r.Int64N(int64(days) * int64(24*time.Hour))))
		e := newEvent(t, ts, sites[r.IntN(len(sites))], names[r.IntN(len(names))], 1+r.Int64N(40))
		e.Path = paths[r.IntN(len(paths))]
		e.Hostname = "example.com"
		e.RefSource = sources[r.IntN(len(sources))]
		if r.IntN(3) == 0 {
			e.UTMSource, e.UTMMedium, e.UTMCampaign = "news", "email", fmt.Sprintf("c%d", r.IntN(3))
		}
		e.Country = countries[r.IntN(len(countries))]
		if e.Country != "" {
			e.Region = e.Country + "-1"
		}
		e.Browser = browsers[r.IntN(len(browsers))]
		e.OS, e.Device = "Linux", "Desktop"
		e.ScreenW = widths[r.IntN(len(widths))]
		if r.IntN(3) == 0 {
			e.DurationMS = r.Int64N(100000)
		}
		if r.IntN(4) == 0 {
			e.Props = map[string]string{"plan": []string{"free", "pro"}[r.IntN(2)], "ab": fmt.Sprint(r.IntN(3))}
		}
		out = append(out, e)
	}
	return out
}

type dimRow struct {
	Site                        int64
	Day                         string
	Dim                         int
	Key, Value                  string
	Pageviews, Events, Visitors int64
}

type hourRow struct {
	Site                        int64
	Hour                        string
	Pageviews, Events, Visitors int64
}

type visitRow struct {
	Site, Visitor     int64
	Start, End, Day   string
	Pageviews, Events int32
	EngagementMS      int64
	Entry, Exit       string
}

type visitDimRow struct {
	Site                        int64
	Day                         string
	Dim                         int
	Value                       string
	Visits, Bounces, DurationMS int64
}

type snapshot struct {
	Events      int64
	Dims        []dimRow
	Hours       []hourRow
	Visits      []visitRow
	VisitDims   []visitDimRow
	DeadLetters int64
}

func takeSnapshot(t testing.TB, pool *pgxpool.Pool) snapshot {
	t.Helper()
	ctx := context.Background()
	var s snapshot
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)`).Scan(&s.Events, &s.DeadLetters); err != nil {
		t.Fatalf("count: %v", err)
	}
	r, err := pool.Query(ctx, `SELECT site_id, to_char(day, 'YYYY-MM-DD'), dim, key, value, pageviews, events, visitors FROM rollup_dims ORDER BY 1, 2, 3, 4, 5`)
	if err != nil {
		t.Fatalf("read dims: %v", err)
	}
	s.Dims, err = pgx.CollectRows(r, pgx.RowToStructByPos[dimRow])
	if err != nil {
		t.Fatalf("read dims: %v", err)
	}
	r, err = pool.Query(ctx, `SELECT site_id, to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24'), pageviews, events, visitors FROM rollup_hourly ORDER BY 1, 2`)
	if err != nil {
		t.Fatalf("read hours: %v", err)
	}
	s.Hours, err = pgx.CollectRows(r, pgx.RowToStructByPos[hourRow])
	if err != nil {
		t.Fatalf("read hours: %v", err)
	}
	r, err = pool.Query(ctx, `SELECT site_id, visitor_id, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'),
		to_char(ended_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), to_char(day, 'YYYY-MM-DD'),
		pageviews, events, engagement_ms, coalesce(entry_page, ''), coalesce(exit_page, '')
		FROM visits ORDER BY 1, 2, 3`)
	if err != nil {
		t.Fatalf("read visits: %v", err)
	}
	s.Visits, err = pgx.CollectRows(r, pgx.RowToStructByPos[visitRow])
	if err != nil {
		t.Fatalf("read visits: %v", err)
	}
	r, err = pool.Query(ctx, `SELECT site_id, to_char(day, 'YYYY-MM-DD'), dim, value, visits, bounces, duration_ms
		FROM rollup_visits ORDER BY 1, 2, 3, 4`)
	if err != nil {
		t.Fatalf("read visit rollups: %v", err)
	}
	s.VisitDims, err = pgx.CollectRows(r, pgx.RowToStructByPos[visitDimRow])
	if err != nil {
		t.Fatalf("read visit rollups: %v", err)
	}
	return s
}

// recount computes the rollups of events in Go, independently of the SQL: events must be
// distinct and of existing sites.
func recount(t testing.TB, events []event.Event, tz map[int64]string) snapshot {
	t.Helper()
	type dk struct {
		site       int64
		day        string
		dim        int
		key, value string
	}
	type hk struct {
		site int64
		hour string
	}
	dims := map[dk]*dimRow{}
	dimSeen := map[dk]map[int64]bool{}
	hours := map[hk]*hourRow{}
	hourSeen := map[hk]map[int64]bool{}
	for _, e := range events {
		loc, err := time.LoadLocation(tz[e.SiteID])
		if err != nil {
			t.Fatalf("zone: %v", err)
		}
		day := e.Time.In(loc).Format("2006-01-02")
		pv, ev := int64(0), int64(0)
		if e.IsPageview() {
			pv = 1
		}
		if e.IsInteraction() {
			ev = 1
		}
		vals := []dk{{dim: 0}, {dim: 1, value: e.Path}, {dim: 2, value: e.Hostname}, {dim: 3, value: e.RefSource},
			{dim: 4, value: e.UTMSource}, {dim: 5, value: e.UTMMedium}, {dim: 6, value: e.UTMCampaign},
			{dim: 7, value: e.UTMTerm}, {dim: 8, value: e.UTMContent}, {dim: 9, value: e.Country},
			{dim: 10, value: e.Region}, {dim: 11, value: e.Browser}, {dim: 12, value: e.OS},
			{dim: 13, value: e.Device}, {dim: 14, value: event.ScreenClass(e.ScreenW)}, {dim: 15, value: e.Name}}
		for k, v := range e.Props {
			vals = append(vals, dk{dim: 16, key: k, value: v})
		}
		for _, k := range vals {
			if k.value == "" && (k.dim >= 4 && k.dim <= 8 || k.dim == 10) || k.dim == 15 && (k.value == event.PageviewName || k.value == event.EngagementName) {
				continue
			}
			k.site, k.day = e.SiteID, day
			row := dims[k]
			if row == nil {
				row = &dimRow{Site: k.site, Day: k.day, Dim: k.dim, Key: k.key, Value: k.value}
				dims[k] = row
				dimSeen[k] = map[int64]bool{}
			}
			row.Pageviews += pv
			row.Events += ev
			if !dimSeen[k][e.Visitor] {
				dimSeen[k][e.Visitor] = true
				row.Visitors++
			}
		}
		h := hk{e.SiteID, e.Time.UTC().Format("2006-01-02 15")}
		hr := hours[h]
		if hr == nil {
			hr = &hourRow{Site: h.site, Hour: h.hour}
			hours[h] = hr
			hourSeen[h] = map[int64]bool{}
		}
		hr.Pageviews += pv
		hr.Events += ev
		if !hourSeen[h][e.Visitor] {
			hourSeen[h][e.Visitor] = true
			hr.Visitors++
		}
	}
	s := snapshot{Events: int64(len(events))}
	s.Visits, s.VisitDims = recountVisits(t, events, tz)
	for _, r := range dims {
		s.Dims = append(s.Dims, *r)
	}
	for _, r := range hours {
		s.Hours = append(s.Hours, *r)
	}
	sort.Slice(s.Dims, func(i, j int) bool {
		a, b := s.Dims[i], s.Dims[j]
		if a.Site != b.Site {
			return a.Site < b.Site
		}
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.Dim != b.Dim {
			return a.Dim < b.Dim
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		return a.Value < b.Value
	})
	sort.Slice(s.Hours, func(i, j int) bool {
		if s.Hours[i].Site != s.Hours[j].Site {
			return s.Hours[i].Site < s.Hours[j].Site
		}
		return s.Hours[i].Hour < s.Hours[j].Hour
	})
	return s
}

func newStore(t testing.TB) (*Store, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	st, err := New(db.Pool)
	if err != nil {
		t.Fatalf("store: %v", err)
	}
	return st, db.Pool
}

// newStoreOneConn is newStore on a pool of one connection: every statement runs in one
// Postgres session.
func newStoreOneConn(t testing.TB) (*Store, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	pool, err := pgutil.Open(context.Background(), db.URL, 1, "pgtest-one")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	st, err := New(pool)
	if err != nil {
		t.Fatal(err)
	}
	return st, pool
}

// newSites creates a site per zone and returns their ids and zones by id.
func newSites(t testing.TB, pool *pgxpool.Pool, zones ...string) ([]int64, map[int64]string) {
	t.Helper()
	tz := map[int64]string{}
	var sites []int64
	for _, zone := range zones {
		id := pgtest.NewSite(t, pool, zone)
		tz[id] = zone
		sites = append(sites, id)
	}
	return sites, tz
}

func write(t testing.TB, st *Store, batch []event.Event) Result {
	t.Helper()
	res, err := st.Write(context.Background(), batch)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return res
}

func TestWriteIsIdempotent(t *testing.T) {
	st, pool := newStore(t)
	site := pgtest.NewSite(t, pool, "Europe/Berlin")
	r := rand.New(rand.NewPCG(1, 2))
	batch := randomEvents(t, r, []int64{site}, 300, time.Date(2026, 3, 30, 12, 0, 0, 0, time.UTC), 3)

	first := write(t, st, batch)
	if first.Inserted != len(batch) {
		t.Fatalf("first write inserted %d, want %d", first.Inserted, len(batch))
	}
	before := takeSnapshot(t, pool)
	tests := []struct {
		name  string
		batch []event.Event
	}{
		{"same batch", batch},
		{"first half", batch[:150]},
		{"a slice repeated inside one batch", append(append([]event.Event{}, batch[10:20]...), batch[10:20]...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := write(t, st, tt.batch)
			if res.Inserted != 0 || len(res.Sites) != 0 || res.Duplicates != len(tt.batch) {
				t.Fatalf("rewrite inserted %d rows, sites %v, %d duplicates; want none, none, %d", res.Inserted, res.Sites, res.Duplicates, len(tt.batch))
			}
			if diff := cmp.Diff(before, takeSnapshot(t, pool)); diff != "" {
				t.Fatalf("rewrite changed the tables (-before +after):\n%s", diff)
			}
		})
	}
}

// TestUniqueViolationIsRetried: a visit that appears between the writer's read and its
// insert (written by a transaction that took no visitor lock) fails the batch with a
// unique violation, which is a reason to retry, not a dead letter; the retry reads the
// visit, merges the batch's events into it and stores the batch exactly.
func TestUniqueViolationIsRetried(t *testing.T) {
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC")
	ctx := context.Background()
	batch := randomEvents(t, rand.New(rand.NewPCG(11, 12)), sites, 50, time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC), 1)

	other, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Rollback(ctx) //nolint:errcheck // committed below; a failed test rolls back
	// An empty visit (no pageview, no event) with the key of the first visit the batch
	// makes for its first event's visitor, counted in rollup_visits as a visit would be,
	// so the retry's merge leaves the figures of the batch alone.
	start := batch[0].Time.Truncate(time.Microsecond)
	for _, e := range batch {
		if e.SiteID == batch[0].SiteID && e.Visitor == batch[0].Visitor && e.Time.Before(start) {
			start = e.Time.Truncate(time.Microsecond)
		}
	}
	day := start.UTC().Format(time.DateOnly)
	if _, err := other.Exec(ctx, `INSERT INTO visits (site_id, visitor_id, started_at, ended_at, day, pageviews, events, engagement_ms)
		VALUES ($1, $2, $3, $3, $4, 0, 0, 0)`, batch[0].SiteID, batch[0].Visitor, start, day); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, `INSERT INTO rollup_visits (site_id, day, dim, value, visits, bounces, duration_ms)
		VALUES ($1, $2, 0, '', 1, 0, 0)`, batch[0].SiteID, day); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := st.Write(ctx, append([]event.Event{}, batch...))
		done <- err
	}()
	// The writer read no such visit (it is not committed) and now waits on a key the
	// other transaction holds: the visit rollup's row, or the visit's in the COPY of new
	// visits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		if err := pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the writer never waited on the visit's row")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := other.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" || IsDataError(err) {
		t.Fatalf("write: %v; want a unique violation that is not a data error", err)
	}
	var stored, dead int
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)`).Scan(&stored, &dead); err != nil {
		t.Fatal(err)
	}
	if stored != 0 || dead != 0 {
		t.Fatalf("after the failed write: %d events, %d dead letters; want none", stored, dead)
	}
	if res := write(t, st, append([]event.Event{}, batch...)); res.Inserted != len(batch) {
		t.Fatalf("retry inserted %d, want %d", res.Inserted, len(batch))
	}
	if diff := cmp.Diff(recount(t, batch, tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups differ from a recount (-want +got):\n%s", diff)
	}
}

// TestRollupsMatchRecount writes with batches that read on a second connection while
// their events insert, and with a pool of one connection, whose batches do everything in
// their own transaction.
func TestRollupsMatchRecount(t *testing.T) {
	t.Run("two connections per batch", func(t *testing.T) {
		st, pool := newStore(t)
		if st.pairs == nil {
			t.Fatal("a pool of 8 writes with one connection per batch")
		}
		testRollupsMatchRecount(t, st, pool)
	})
	t.Run("a pool of one connection", func(t *testing.T) {
		st, pool := newStoreOneConn(t)
		if st.pairs != nil {
			t.Fatal("a pool of one connection would wait for a second one")
		}
		testRollupsMatchRecount(t, st, pool)
	})
}

func testRollupsMatchRecount(t *testing.T, st *Store, pool *pgxpool.Pool) {
	sites, tz := newSites(t, pool, "UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
	gone := pgtest.NewSite(t, pool, "UTC")
	if _, err := pool.Exec(context.Background(), `DELETE FROM sites WHERE id = $1`, gone); err != nil {
		t.Fatalf("delete site: %v", err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	// Crosses a month edge and New York's DST change.
	end := time.Date(2026, 3, 10, 6, 0, 0, 0, time.UTC)
	events := randomEvents(t, r, sites, 3000, end, 12)
	orphans := randomEvents(t, r, []int64{gone}, 50, end, 3)

	// Batches of random sizes, out of order, with redeliveries mixed in.
	all := append(append([]event.Event{}, events...), orphans...)
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	for len(all) > 0 {
		n := min(len(all), 1+r.IntN(400))
		batch := append([]event.Event{}, all[:n]...)
		for range r.IntN(20) {
			batch = append(batch, events[r.IntN(len(events))])
		}
		write(t, st, batch)
		all = all[n:]
	}

	want := recount(t, events, tz)
	got := takeSnapshot(t, pool)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("rollups differ from a recount of raw events (-want +got):\n%s", diff)
	}

	t.Run("rebuild equals incremental", func(t *testing.T) {
		ctx := context.Background()
		for _, site := range sites {
			if err := Rebuild(ctx, pool, site, end.AddDate(0, 0, -14), end.AddDate(0, 0, 1)); err != nil {
				t.Fatalf("rebuild: %v", err)
			}
		}
		if diff := cmp.Diff(got, takeSnapshot(t, pool)); diff != "" {
			t.Fatalf("rebuilt rollups differ from incremental ones (-incremental +rebuilt):\n%s", diff)
		}
		// A rebuild of one inner day leaves the neighbours intact.
		if err := Rebuild(ctx, pool, sites[2], end.AddDate(0, 0, -3), end.AddDate(0, 0, -3)); err != nil {
			t.Fatalf("rebuild one day: %v", err)
		}
		if diff := cmp.Diff(got, takeSnapshot(t, pool)); diff != "" {
			t.Fatalf("rebuilding one day changed the rollups:\n%s", diff)
		}
		// Writes after the rebuilds find every first sighting, of the days rebuilt and of
		// those beside them whose visits the rebuilds took and made again: no visitor
		// counts twice in a day.
		more := randomEvents(t, r, sites, 1500, end, 12)
		write(t, st, more)
		if diff := cmp.Diff(recount(t, append(append([]event.Event{}, events...), more...), tz), takeSnapshot(t, pool)); diff != "" {
			t.Fatalf("writes after the rebuilds differ from a recount (-want +got):\n%s", diff)
		}
	})
}

func TestWriteDropsEventsOfDeletedSites(t *testing.T) {
	st, pool := newStore(t)
	site := pgtest.NewSite(t, pool, "UTC")
	gone := pgtest.NewSite(t, pool, "UTC")
	if _, err := pool.Exec(context.Background(), `DELETE FROM sites WHERE id = $1`, gone); err != nil {
		t.Fatalf("delete site: %v", err)
	}
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	res := write(t, st, []event.Event{newEvent(t, now, site, "pageview", 1), newEvent(t, now, gone, "pageview", 2)})
	if diff := cmp.Diff([]SiteChange{{SiteID: site, Inserted: 1, From: now, To: now}}, res.Sites); diff != "" {
		t.Fatalf("sites (-want +got):\n%s", diff)
	}
	if res.SiteDeleted != 1 || res.Duplicates != 0 {
		t.Fatalf("%d events of deleted sites, %d duplicates; want 1 and 0", res.SiteDeleted, res.Duplicates)
	}
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM rollup_dims WHERE site_id = $1`, gone).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rollups of deleted site: %d rows, err %v", n, err)
	}
}

func TestWriteCreatesMissingPartition(t *testing.T) {
	st, pool := newStore(t)
	site := pgtest.NewSite(t, pool, "UTC")
	old := time.Date(2019, 2, 3, 4, 5, 6, 0, time.UTC)
	res := write(t, st, []event.Event{newEvent(t, old, site, "pageview", 1)})
	if res.Inserted != 1 {
		t.Fatalf("inserted %d, want 1", res.Inserted)
	}
	var part string
	if err := pool.QueryRow(context.Background(), `SELECT tableoid::regclass::text FROM events`).Scan(&part); err != nil {
		t.Fatalf("read event: %v", err)
	}
	if part != "events_y2019m02" {
		t.Fatalf("event stored in %q, want events_y2019m02", part)
	}
}

// longPath is a page path Postgres cannot index (SQLSTATE 54000: an index row larger
// than a btree page allows) though ingest accepts it: random, so compression cannot make
// it fit.
func longPath() string {
	r := rand.New(rand.NewPCG(3, 4))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	b := make([]byte, 3000)
	for i := range b {
		b[i] = alphabet[r.IntN(len(alphabet))]
	}
	return "/t/" + string(b)
}

func TestWriteDeadLettersBadEvents(t *testing.T) {
	negative := func(e *event.Event) { e.DurationMS = -1 }
	tests := []struct {
		name   string
		bad    []int
		size   int
		spoil  func(*event.Event)
		reason string // LIKE pattern of the dead letters' reason
	}{
		{"one bad in the middle", []int{7}, 16, negative, "%events_nonnegative%"},
		{"first and last bad", []int{0, 32}, 33, negative, "%events_nonnegative%"},
		{"a batch of one bad", []int{0}, 1, negative, "%events_nonnegative%"},
		{"screen too wide for int4", []int{3}, 5, func(e *event.Event) { e.ScreenW = math.MaxInt32 + 1 }, "screen size out of range"},
		{"path too long for its index", []int{25}, 50, func(e *event.Event) { e.Path = longPath() }, "%index row size%"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, pool := newStore(t)
			site := pgtest.NewSite(t, pool, "UTC")
			now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
			batch := make([]event.Event, tt.size)
			for i := range batch {
				batch[i] = newEvent(t, now.Add(time.Duration(i)*time.Second), site, "pageview", int64(i))
				batch[i].Path = "/ok"
			}
			for _, i := range tt.bad {
				tt.spoil(&batch[i])
				if !event.Storable(batch[i].Path) {
					t.Fatalf("path of %d bytes not storable: ingest would refuse it", len(batch[i].Path))
				}
			}
			res := write(t, st, batch)
			if res.Inserted != tt.size-len(tt.bad) || res.DeadLettered != len(tt.bad) {
				t.Fatalf("inserted %d, dead-lettered %d; want %d, %d", res.Inserted, res.DeadLettered, tt.size-len(tt.bad), len(tt.bad))
			}
			var ids []uuid.UUID
			r, err := pool.Query(context.Background(), `SELECT id FROM dead_letters WHERE reason LIKE $2 AND (event->>'site')::bigint = $1 ORDER BY id`, site, tt.reason)
			if err == nil {
				ids, err = pgx.CollectRows(r, pgx.RowTo[uuid.UUID])
			}
			if err != nil {
				t.Fatalf("read dead letters: %v", err)
			}
			var want []uuid.UUID
			for _, i := range tt.bad {
				want = append(want, batch[i].ID)
			}
			sort.Slice(want, func(i, j int) bool { return want[i].String() < want[j].String() })
			if diff := cmp.Diff(want, ids); diff != "" {
				t.Fatalf("dead letters (-want +got):\n%s", diff)
			}
			var pv int64
			if err := pool.QueryRow(context.Background(), `SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE dim = 0`).Scan(&pv); err != nil || pv != int64(res.Inserted) {
				t.Fatalf("rollup pageviews %d (err %v), want %d", pv, err, res.Inserted)
			}
			// A redelivery finds the stored events and the dead letters already there:
			// all duplicates, none counted again.
			again := write(t, st, batch)
			if diff := cmp.Diff(Result{Duplicates: tt.size}, again); diff != "" {
				t.Fatalf("redelivery (-want +got):\n%s", diff)
			}
		})
	}
}

// TestWriteReturnsWhatCommittedBeforeAFailure: a split batch whose first half commits
// and whose second half then fails for a reason worth a retry (here dead_letters is
// away, as in an outage) returns the error with what the first half stored: the retry
// finds those events stored, so only this result can report them.
func TestWriteReturnsWhatCommittedBeforeAFailure(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	site := pgtest.NewSite(t, pool, "UTC")
	at := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	good := newEvent(t, at, site, "pageview", 1)
	bad := newEvent(t, at.Add(time.Second), site, "pageview", 2)
	bad.DurationMS = -5
	if _, err := pool.Exec(ctx, `ALTER TABLE dead_letters RENAME TO dead_letters_away`); err != nil {
		t.Fatal(err)
	}
	res, err := st.Write(ctx, []event.Event{good, bad})
	if err == nil || IsDataError(err) {
		t.Fatalf("write: %v; want an error to retry", err)
	}
	want := Result{Inserted: 1, Sites: []SiteChange{{SiteID: site, Inserted: 1, From: at, To: at}}}
	if diff := cmp.Diff(want, res); diff != "" {
		t.Fatalf("result of the failed write (-want +got):\n%s", diff)
	}
	if _, err := pool.Exec(ctx, `ALTER TABLE dead_letters_away RENAME TO dead_letters`); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Result{DeadLettered: 1, Duplicates: 1}, write(t, st, []event.Event{good, bad})); diff != "" {
		t.Fatalf("result of the retry (-want +got):\n%s", diff)
	}
}

// TestWriteCreatesOnlyItsMonths: a batch with an event of year 1000 beside one of today
// creates the partitions of those two months, not of the twelve thousand between, which
// one transaction could not even lock (out of shared memory, retried for ever).
func TestWriteCreatesOnlyItsMonths(t *testing.T) {
	st, pool := newStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	site := pgtest.NewSite(t, pool, "UTC")
	partitions := func() []string {
		t.Helper()
		rows, err := pool.Query(ctx, listPartitions+` ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	before := partitions()
	batch := []event.Event{
		newEvent(t, time.Date(1000, 1, 1, 0, 0, 0, 0, time.UTC), site, "pageview", 1),
		newEvent(t, time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC), site, "pageview", 2),
	}
	res, err := st.Write(ctx, batch)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	if res.Inserted != 2 {
		t.Fatalf("inserted %d, want 2", res.Inserted)
	}
	want := append([]string{}, before...)
	for _, p := range []string{"events_y1000m01", "events_y2026m06"} {
		if !slices.Contains(want, p) {
			want = append(want, p)
		}
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, partitions()); diff != "" {
		t.Fatalf("partitions (-want +got):\n%s", diff)
	}
}

func TestPropertyValuesAreBounded(t *testing.T) {
	st, pool := newStore(t)
	site := pgtest.NewSite(t, pool, "UTC")
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	mk := func(from, to int) []event.Event {
		var b []event.Event
		for i := from; i < to; i++ {
			e := newEvent(t, now, site, "signup", int64(i))
			e.Props = map[string]string{"user": fmt.Sprintf("u%05d", i)}
			b = append(b, e)
		}
		return b
	}
	first := mk(0, 990)
	write(t, st, first)
	write(t, st, mk(990, 1020))
	write(t, st, first[:5]) // duplicates change nothing
	type row struct {
		Values, Events, Visitors int64
	}
	var got row
	err := pool.QueryRow(context.Background(), `
		SELECT count(*), sum(events), sum(visitors) FROM rollup_dims
		WHERE site_id = $1 AND dim = 16 AND key = 'user'`, site).Scan(&got.Values, &got.Events, &got.Visitors)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var other int64
	if err := pool.QueryRow(context.Background(), `SELECT events FROM rollup_dims WHERE site_id = $1 AND dim = 16 AND value = '(other)'`, site).Scan(&other); err != nil {
		t.Fatalf("read other: %v", err)
	}
	if diff := cmp.Diff(row{Values: 1001, Events: 1020, Visitors: 1020}, got); diff != "" || other != 20 {
		t.Fatalf("bounded values (-want +got):\n%s\n(other) = %d, want 20", diff, other)
	}
	// Past the bound, a value counted before is still counted as itself, a new one as
	// (other).
	known, fresh := newEvent(t, now.Add(time.Minute), site, "signup", 5000), newEvent(t, now.Add(time.Minute), site, "signup", 5001)
	known.Props, fresh.Props = map[string]string{"user": "u00003"}, map[string]string{"user": "u99999"}
	write(t, st, []event.Event{known, fresh})
	var u3 int64
	if err := pool.QueryRow(context.Background(), `SELECT
		(SELECT events FROM rollup_dims WHERE site_id = $1 AND dim = 16 AND value = 'u00003'),
		(SELECT events FROM rollup_dims WHERE site_id = $1 AND dim = 16 AND value = '(other)')`, site).Scan(&u3, &other); err != nil {
		t.Fatal(err)
	}
	if u3 != 2 || other != 21 {
		t.Fatalf("past the bound: u00003 counted %d times, (other) %d; want 2 and 21", u3, other)
	}
}

func TestDropPartitionsBefore(t *testing.T) {
	st, pool := newStore(t)
	site := pgtest.NewSite(t, pool, "UTC")
	ctx := context.Background()
	var batch []event.Event
	for m := 1; m <= 4; m++ {
		batch = append(batch, newEvent(t, time.Date(2026, time.Month(m), 15, 0, 0, 0, 0, time.UTC), site, "pageview", int64(m)))
	}
	write(t, st, batch)
	dropped, err := st.DropPartitionsBefore(ctx, time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatalf("drop: %v", err)
	}
	if diff := cmp.Diff([]string{"events_y2026m01", "events_y2026m02"}, dropped); diff != "" {
		t.Fatalf("dropped (-want +got):\n%s", diff)
	}
	var events, pageviews int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT sum(pageviews) FROM rollup_dims WHERE dim = 0)`).Scan(&events, &pageviews); err != nil {
		t.Fatalf("count: %v", err)
	}
	if events != 2 || pageviews != 4 {
		t.Fatalf("after retention: %d events, %d rolled-up pageviews; want 2 and 4", events, pageviews)
	}
	if err := Rebuild(ctx, pool, site, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)); err == nil {
		t.Fatalf("rebuild over dropped raw events succeeded; want ErrNoRawEvents")
	}
}

// TestRetentionWaitsForARebuild: retention dropping a month's raw events while a
// rebuild of that month runs waits for the rebuild to commit (here, it gives up after
// its lock timeout), so the rebuild never replays a month that vanished under it.
func TestRetentionWaitsForARebuild(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	site := pgtest.NewSite(t, pool, "UTC")
	write(t, st, []event.Event{
		newEvent(t, time.Date(2026, 1, 31, 23, 50, 0, 0, time.UTC), site, "pageview", 1), // a visit into February
		newEvent(t, time.Date(2026, 2, 1, 0, 5, 0, 0, time.UTC), site, "pageview", 1),
		newEvent(t, time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC), site, "pageview", 2),
	})
	pageviews := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT coalesce(sum(pageviews), 0) FROM rollup_dims WHERE site_id = $1 AND dim = 0`, site).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var dropErr error
	afterRebuildChecks = func() {
		// Retention's drop of January, from a connection of its own, once the rebuild
		// has checked that the month the range's visit began in is there.
		conn, err := pool.Acquire(ctx)
		if err != nil {
			dropErr = err
			return
		}
		defer conn.Release()
		_, dropErr = conn.Exec(ctx, `SET lock_timeout = '300ms'; DROP TABLE events_y2026m01; RESET lock_timeout`)
	}
	t.Cleanup(func() { afterRebuildChecks = nil })
	feb1 := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	err := Rebuild(ctx, pool, site, feb1, feb1)
	afterRebuildChecks = nil
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	var pgErr *pgconn.PgError
	if !errors.As(dropErr, &pgErr) || pgErr.Code != pgerrcode.LockNotAvailable {
		t.Fatalf("retention's drop during the rebuild: %v; want it to wait for the rebuild", dropErr)
	}
	if got := pageviews(); got != 3 {
		t.Fatalf("after the rebuild: %d pageviews, want 3", got)
	}
	// Once the rebuild is done, retention goes on.
	if _, err := st.DropPartitionsBefore(ctx, feb1); err != nil {
		t.Fatalf("drop: %v", err)
	}
	if got := pageviews(); got != 3 {
		t.Fatalf("after retention: %d pageviews, want 3 (rollups are kept)", got)
	}
}

// TestRebuildNextToADroppedMonth: a rebuild whose range's visits reach into a month
// retention dropped is refused, and changes nothing; one whose visits stay clear of it
// goes on.
func TestRebuildNextToADroppedMonth(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	at := func(d, h, m int) time.Time {
		return time.Date(2026, time.Month(1+(d-1)/31), 1+(d-1)%31, h, m, 0, 0, time.UTC)
	}
	crossing := pgtest.NewSite(t, pool, "UTC")
	write(t, st, []event.Event{
		newEvent(t, at(31, 23, 50), crossing, "pageview", 1), // a visit across the month's edge
		newEvent(t, at(32, 0, 10), crossing, "pageview", 1),
		newEvent(t, at(32, 12, 0), crossing, "pageview", 2),
	})
	clear := pgtest.NewSite(t, pool, "UTC")
	write(t, st, []event.Event{
		newEvent(t, at(30, 10, 0), clear, "pageview", 1),
		newEvent(t, at(32, 12, 0), clear, "pageview", 2),
	})
	if _, err := st.DropPartitionsBefore(ctx, at(32, 0, 0)); err != nil {
		t.Fatalf("drop: %v", err)
	}
	visitRollups := func(site int64) string {
		var s string
		if err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(day || ':' || visits || ':' || bounces || ':' || duration_ms, ' ' ORDER BY day), '')
			FROM rollup_visits WHERE site_id = $1 AND dim = 0`, site).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	before := visitRollups(crossing)
	feb1 := at(32, 0, 0)
	if err := Rebuild(ctx, pool, crossing, feb1, feb1); !errors.Is(err, ErrNoRawEvents) {
		t.Fatalf("rebuild of a day whose visit began in a dropped month: %v, want ErrNoRawEvents", err)
	}
	if after := visitRollups(crossing); after != before {
		t.Fatalf("visit rollups changed by a refused rebuild: %q -> %q", before, after)
	}
	before = visitRollups(clear)
	if err := Rebuild(ctx, pool, clear, feb1, feb1); err != nil {
		t.Fatalf("rebuild of a day whose visits stay in it: %v", err)
	}
	if after := visitRollups(clear); after != before {
		t.Fatalf("visit rollups differ after the rebuild: %q -> %q", before, after)
	}
}

// recountVisits splits each visitor's events into visits by the 30-minute rule.
func recountVisits(t testing.TB, events []event.Event, tz map[int64]string) ([]visitRow, []visitDimRow) {
	t.Helper()
	type vk struct{ site, visitor int64 }
	by := map[vk][]event.Event{}
	for _, e := range events {
		k := vk{e.SiteID, e.Visitor}
		by[k] = append(by[k], e)
	}
	const layout = "2006-01-02 15:04:05.000000"
	type dk struct {
		site  int64
		day   string
		dim   int
		value string
	}
	dims := map[dk]*visitDimRow{}
	var visits []visitRow
	for k, evs := range by {
		sort.Slice(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
		loc, err := time.LoadLocation(tz[k.site])
		if err != nil {
			t.Fatalf("zone: %v", err)
		}
		flush := func(vs []event.Event) {
			v := visitRow{Site: k.site, Visitor: k.visitor, Start: vs[0].Time.UTC().Format(layout),
				End: vs[len(vs)-1].Time.UTC().Format(layout), Day: vs[0].Time.In(loc).Format("2006-01-02")}
			var entryAt, exitAt time.Time
			for _, e := range vs {
				v.EngagementMS += e.DurationMS
				if e.IsInteraction() {
					v.Events++
				}
				if !e.IsPageview() {
					continue
				}
				v.Pageviews++
				if entryAt.IsZero() || e.Time.Before(entryAt) || e.Time.Equal(entryAt) && e.Path < v.Entry {
					entryAt, v.Entry = e.Time, e.Path
				}
				if exitAt.IsZero() || e.Time.After(exitAt) || e.Time.Equal(exitAt) && e.Path > v.Exit {
					exitAt, v.Exit = e.Time, e.Path
				}
			}
			visits = append(visits, v)
			dur := vs[len(vs)-1].Time.Sub(vs[0].Time).Milliseconds() + v.EngagementMS
			vals := []dk{{dim: 0}}
			if v.Pageviews > 0 {
				vals = append(vals, dk{dim: 1, value: v.Entry}, dk{dim: 2, value: v.Exit})
			}
			for _, d := range vals {
				d.site, d.day = k.site, v.Day
				row := dims[d]
				if row == nil {
					row = &visitDimRow{Site: d.site, Day: d.day, Dim: d.dim, Value: d.value}
					dims[d] = row
				}
				row.Visits++
				row.DurationMS += dur
				if v.Pageviews == 1 && v.Events == 0 {
					row.Bounces++
				}
			}
		}
		start := 0
		for i := 1; i < len(evs); i++ {
			if evs[i].Time.Sub(evs[i-1].Time) > 30*time.Minute {
				flush(evs[start:i])
				start = i
			}
		}
		flush(evs[start:])
	}
	sort.Slice(visits, func(i, j int) bool {
		a, b := visits[i], visits[j]
		if a.Site != b.Site {
			return a.Site < b.Site
		}
		if a.Visitor != b.Visitor {
			return a.Visitor < b.Visitor
		}
		return a.Start < b.Start
	})
	var out []visitDimRow
	for _, r := range dims {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Site != b.Site {
			return a.Site < b.Site
		}
		if a.Day != b.Day {
			return a.Day < b.Day
		}
		if a.Dim != b.Dim {
			return a.Dim < b.Dim
		}
		return a.Value < b.Value
	})
	return visits, out
}

// TestConcurrentWritersAndRebuild runs writers side by side, as replicas sharing the
// consumer do, on batches that share visitors and days, with redeliveries and a rebuild
// running meanwhile: the result must still equal a recount.
func TestConcurrentWritersAndRebuild(t *testing.T) {
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC", "Asia/Kolkata")
	r := rand.New(rand.NewPCG(7, 8))
	end := time.Date(2026, 7, 3, 6, 0, 0, 0, time.UTC)
	events := randomEvents(t, r, sites, 2400, end, 3)
	var batches [][]event.Event
	for i := 0; i < len(events); i += 150 {
		b := append([]event.Event{}, events[i:min(i+150, len(events))]...)
		b = append(b, events[r.IntN(len(events))], events[r.IntN(len(events))])
		batches = append(batches, b)
	}
	ctx := context.Background()
	work := make(chan []event.Event)
	errs := make(chan error, 8)
	stop := make(chan struct{})
	rebuilt := make(chan error, 1)
	var rebuilds, retries atomic.Int64
	go func() {
		var err error
		for err == nil {
			select {
			case <-stop:
				rebuilt <- nil
				return
			default:
			}
			err = Rebuild(ctx, pool, sites[1], end.AddDate(0, 0, -4), end)
			rebuilds.Add(1)
		}
		rebuilt <- err
	}()
	for range 4 {
		go func() {
			for b := range work {
				// A writer naks a batch that failed for a transient reason (a deadlock
				// among upserts); the redelivery is this retry.
				var err error
				for attempt := 0; attempt < 20; attempt++ {
					if _, err = st.Write(ctx, b); err == nil {
						break
					}
					retries.Add(1)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for _, b := range batches {
		work <- b
	}
	close(work)
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	close(stop)
	if err := <-rebuilt; err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	t.Logf("%d rebuilds ran alongside; %d batch retries", rebuilds.Load(), retries.Load())
	if diff := cmp.Diff(recount(t, events, tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups after concurrent writes differ from a recount (-want +got):\n%s", diff)
	}
}

// TestSightingsMigrate: the first sightings of visitors counted before an upgrade are
// recognised after it, so no visitor is counted twice in a day's dimensions or an hour,
// also where the zone's offset is not whole hours. Migration 000003 turned hour_visitors
// into hour sightings in visitor_days; 000011 moves visitor_days onto the visits. The
// data before is made in the 000002 state: the visits and rollups the writer stores, and
// the visitor_days rows the writer of that time stored beside them.
func TestSightingsMigrate(t *testing.T) {
	st, pool := newStore(t)
	ctx := context.Background()
	sites, tz := newSites(t, pool, "UTC", "Asia/Kathmandu")
	r := rand.New(rand.NewPCG(11, 12))
	end := time.Date(2026, 8, 2, 0, 0, 0, 0, time.UTC)
	before := randomEvents(t, r, sites, 600, end, 2)
	write(t, st, before)
	readMig := func(name string) string {
		b, err := fs.ReadFile(migrations.FS, name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	exec := func(what, sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	exec("down 000011", readMig("000011_sightings_on_visits.down.sql"))
	exec("down 000009", readMig("000009_visitor_days_drop_added.down.sql"))
	// visitor_days as the writer of 000002 kept it: per visitor and local day, the
	// untagged hash of every (dim, key, value) counted. Going down, 000003 puts the
	// hours in hour_visitors from the raw events.
	seen := map[visitorDay]map[int64]struct{}{}
	for _, e := range before {
		loc, err := time.LoadLocation(tz[e.SiteID])
		if err != nil {
			t.Fatal(err)
		}
		day := dayOf(e.Time, loc)
		vd := visitorDay{e.SiteID, day, e.Visitor}
		if seen[vd] == nil {
			seen[vd] = map[int64]struct{}{}
		}
		for _, v := range dimValues(nil, &e) {
			seen[vd][dimHash(v.dim, v.key, v.value)] = struct{}{}
		}
		for k, v := range e.Props {
			seen[vd][dimHash(dimProperty, k, v)] = struct{}{}
		}
	}
	for vd, hs := range seen {
		var arr []int64
		for h := range hs {
			arr = append(arr, h)
		}
		exec("old visitor day", `INSERT INTO visitor_days (site_id, day, visitor_id, seen) VALUES ($1, $2, $3, $4)`,
			vd.site, dateOf(vd.day), vd.visitor, arr)
	}
	exec("down 000003", readMig("000003_hour_sightings.down.sql"))
	exec("up 000003", readMig("000003_hour_sightings.up.sql"))
	exec("up 000009", readMig("000009_visitor_days_drop_added.up.sql"))
	exec("up 000011", readMig("000011_sightings_on_visits.up.sql"))
	after := randomEvents(t, r, sites, 600, end, 2)
	write(t, st, after)
	if diff := cmp.Diff(recount(t, append(before, after...), tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups across the migrations differ from a recount (-want +got):\n%s", diff)
	}
}

// TestManyVisitorsConcurrently: four writers with big batches of distinct visitors at
// once stay within Postgres's shared lock table (one lock per visitor would need 16,000
// entries; the default table holds about 6,400 plus slack) and the totals stay exact.
func TestManyVisitorsConcurrently(t *testing.T) {
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC")
	r := rand.New(rand.NewPCG(13, 14))
	end := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	var all []event.Event
	errs := make(chan error, 4)
	for w := range 4 {
		batch := randomEvents(t, r, sites, 4000, end, 1)
		for i := range batch {
			batch[i].Visitor = int64(w*4000 + i)
		}
		all = append(all, batch...)
		go func() {
			_, err := st.Write(context.Background(), batch)
			errs <- err
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	want := recount(t, all, tz)
	got := takeSnapshot(t, pool)
	if diff := cmp.Diff(want.Hours, got.Hours); diff != "" {
		t.Fatalf("hourly rollups differ from a recount (-want +got):\n%s", diff)
	}
	if got.Events != int64(len(all)) {
		t.Fatalf("%d events stored, want %d", got.Events, len(all))
	}
}

// TestWriteSubMicrosecondTimes: an event whose time carries nanoseconds (Postgres keeps
// microseconds) is recognised as new, counted once, and a no-op when redelivered.
func TestWriteSubMicrosecondTimes(t *testing.T) {
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC")
	r := rand.New(rand.NewPCG(15, 16))
	batch := randomEvents(t, r, sites, 200, time.Date(2026, 4, 2, 0, 0, 0, 0, time.UTC), 1)
	for i := range batch {
		batch[i].Time = batch[i].Time.Add(time.Duration(1 + r.IntN(999)))
	}
	redelivered := append([]event.Event{}, batch...)
	if res := write(t, st, batch); res.Inserted != len(batch) {
		t.Fatalf("inserted %d, want %d", res.Inserted, len(batch))
	}
	want := append([]event.Event{}, redelivered...)
	for i := range want {
		want[i].Time = want[i].Time.Truncate(time.Microsecond)
	}
	if diff := cmp.Diff(recount(t, want, tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups differ from a recount (-want +got):\n%s", diff)
	}
	if res := write(t, st, redelivered); res.Inserted != 0 {
		t.Fatalf("redelivery inserted %d, want 0", res.Inserted)
	}
	if diff := cmp.Diff(recount(t, want, tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("redelivery changed the rollups (-want +got):\n%s", diff)
	}
}
