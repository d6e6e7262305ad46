package store

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/haru-analytics/haru/pkg/event"
)

// TestReplayPageReadsOnlyItsMonths checks that a page of a rebuild's replay starts at its
// key: the events it returns are those after the key, and no month before the key is
// read. Paged by the row comparison alone, each page read every earlier month's index
// whole (at 50 M events a week's rebuild took 237 s instead of 31 s).
func TestReplayPageReadsOnlyItsMonths(t *testing.T) {
	st, pool := newStore(t)
	sites, _ := newSites(t, pool, "UTC")
	jan := time.Date(2026, 1, 10, 12, 0, 0, 0, time.UTC)
	mar := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	var batch []event.Event
	for i := range 20 {
		batch = append(batch, newEvent(t, jan.Add(time.Duration(i)*time.Minute), sites[0], "pageview", int64(i)))
		batch = append(batch, newEvent(t, mar.Add(time.Duration(i)*time.Minute), sites[0], "pageview", int64(100+i)))
	}
	write(t, st, batch)

	ctx := context.Background()
	after := mar.Add(9 * time.Minute)
	to := mar.AddDate(0, 0, 1)
	rows, err := pool.Query(ctx, replayChunk, sites[0], to, after, uuid.UUID{}, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []time.Time
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, vals[1].(time.Time))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != 11 || !got[0].Equal(after) || !got[10].Equal(mar.Add(19*time.Minute)) {
		t.Fatalf("page after %s: got %d events %v, want the 11 from %s on", after, len(got), got, after)
	}

	plan := explain(t, pool, "EXPLAIN (ANALYZE, COSTS OFF) "+replayChunk, sites[0], to, after, uuid.UUID{}, 100)
	if !strings.Contains(plan, "events_y2026m03") {
		t.Fatalf("the page's own month is not in the plan:\n%s", plan)
	}
	if strings.Contains(plan, "events_y2026m01") {
		t.Fatalf("a page in March reads January's events:\n%s", plan)
	}
}

// TestRebuildReadsAroundTheRangeOnlyItsVisitors rebuilds one day whose neighbours hold
// many events of other visitors: the replay reads the day's events and, around it, only
// those of the day's visitors (one visit crosses midnight into the day), each event once
// (two sit on the last microsecond before an edge between the parts it reads), and the
// rebuilt rollups still equal a recount of every event.
func TestRebuildReadsAroundTheRangeOnlyItsVisitors(t *testing.T) {
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC")
	site := sites[0]
	day := time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)
	at := func(h, m int) time.Time { return day.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute) }
	var events []event.Event
	add := func(ts time.Time, visitor int64, path string) {
		e := newEvent(t, ts, site, "pageview", visitor)
		e.Path = path
		events = append(events, e)
	}
	// Visitor 1: a visit from 23:50 the evening before into the day, and one two days
	// before. Visitor 3: the day only. Visitor 2: the days around only, 60 events.
	add(at(-24-24+10, 0), 1, "/old")
	add(at(-1, 50), 1, "/late")
	add(day.Add(-time.Microsecond), 1, "/edge") // the last instant before the day
	add(at(0, 5), 1, "/early")
	for i := range 5 {
		add(at(9, i), 3, "/day")
	}
	// The last instant of what the replay reads whole (the day and the hour after it).
	add(day.Add(25*time.Hour-time.Microsecond), 3, "/next")
	for i := range 30 {
		add(at(-12, i), 2, "/before")
		add(at(24+12, i), 2, "/after")
	}
	write(t, st, events)
	want := recount(t, events, tz)
	if diff := cmp.Diff(want, takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups differ from a recount before the rebuild (-want +got):\n%s", diff)
	}

	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	n, err := rebuild(ctx, pool, tx, site, day, day)
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n != 10 {
		t.Fatalf("the rebuild replayed %d events, want 10: the day's 6 and 4 of its visitors around it, each once", n)
	}
	if diff := cmp.Diff(want, takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rebuilt rollups differ from a recount (-want +got):\n%s", diff)
	}
}

// TestRebuildPlansWithItsParameters rebuilds day by day on one connection, as
// rebuild-rollups does: past five runs Postgres may switch a prepared statement to a
// generic plan, where visitor_id = ANY($n) tests each row against the whole list of the
// range's visitors (a week of 1-day chunks at a million events took 171-213 s instead of
// 35-45 s). No statement with such a list may run on a generic plan.
func TestRebuildPlansWithItsParameters(t *testing.T) {
	st, pool := newStoreOneConn(t)
	ctx := context.Background()
	sites, _ := newSites(t, pool, "UTC")
	r := rand.New(rand.NewPCG(5, 6))
	end := time.Date(2026, 3, 12, 0, 0, 0, 0, time.UTC)
	write(t, st, randomEvents(t, r, sites, 2000, end, 10))
	for d := 8; d >= 1; d-- {
		if err := Rebuild(ctx, pool, sites[0], end.AddDate(0, 0, -d), end.AddDate(0, 0, -d)); err != nil {
			t.Fatalf("rebuild: %v", err)
		}
	}
	rows, err := pool.Query(ctx, `SELECT statement, custom_plans, generic_plans FROM pg_prepared_statements
		WHERE statement LIKE '%= ANY(%' AND statement NOT LIKE '%pg_prepared_statements%'`)
	if err != nil {
		t.Fatal(err)
	}
	var custom int64
	for rows.Next() {
		var sql string
		var c, g int64
		if err := rows.Scan(&sql, &c, &g); err != nil {
			t.Fatal(err)
		}
		if g > 0 {
			t.Errorf("%d of %d runs on a generic plan:\n%s", g, c+g, sql)
		}
		custom += c
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if custom < 8 {
		t.Fatalf("%d custom plans of statements with a visitor list, want one per rebuild at least", custom)
	}
}
