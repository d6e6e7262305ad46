package account

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestDeleteSiteWaitsForBatchInFlight: a writer batch that has taken its sites' shared
// lock and read the site as existing (services/writer/internal/store/sql/lock_sites.sql)
// commits its events before the site's deletion, which then removes them; deleting
// first would leave them behind for ever.
func TestDeleteSiteWaitsForBatchInFlight(t *testing.T) {
	db, st, site, owner := ownedSite(t)
	ctx := context.Background()
	at := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	if _, err := db.Pool.Exec(ctx, `SELECT ensure_event_partitions($1, $1)`, at); err != nil {
		t.Fatal(err)
	}

	batch, err := db.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Rollback(ctx) //nolint:errcheck // committed below; a failed test rolls back
	var exists bool
	if _, err := batch.Exec(ctx, `SELECT pg_advisory_xact_lock_shared(1751220853, (s % 2147483647)::int) FROM unnest($1::bigint[]) s`,
		[]int64{site}); err != nil {
		t.Fatal(err)
	}
	if err := batch.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM sites WHERE id = $1)`, site).Scan(&exists); err != nil || !exists {
		t.Fatalf("site read by the batch: exists %v, err %v", exists, err)
	}

	deleted := make(chan error, 1)
	go func() { deleted <- st.DeleteSite(ctx, owner, site) }()
	deadline := time.Now().Add(10 * time.Second)
	for waiting := false; !waiting; {
		select {
		case err := <-deleted:
			t.Fatalf("DeleteSite returned (err %v) while a batch of the site was in flight; want it to wait", err)
		default:
		}
		if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory')`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("DeleteSite never waited for the batch in flight")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := batch.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id) VALUES ($1, $2, gen_random_uuid(), 'pageview', 1)`,
		site, at); err != nil {
		t.Fatal(err)
	}
	if err := batch.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-deleted; err != nil {
		t.Fatalf("delete site: %v", err)
	}
	var left int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE site_id = $1`, site).Scan(&left); err != nil || left != 0 {
		t.Fatalf("events of the deleted site: %d (err %v), want none", left, err)
	}
}

// TestUpdateSiteAsksForRebuildOnZoneChange: a new timezone asks for the site's rollups to
// be rebuilt, in the change's transaction; any other change asks for nothing, and asking
// again while a request waits moves its time on.
func TestUpdateSiteAsksForRebuildOnZoneChange(t *testing.T) {
	db, st, site, owner := ownedSite(t)
	ctx := context.Background()
	pending := func() (Rebuild, bool) {
		t.Helper()
		r, err := st.PendingRebuild(ctx, site)
		if err != nil {
			t.Fatal(err)
		}
		if r == nil {
			return Rebuild{}, false
		}
		return *r, true
	}
	in := SiteInput{Name: "Blog", Domain: "blog.example.com", Timezone: "UTC"}
	if _, err := st.UpdateSite(ctx, owner, site, in); err != nil {
		t.Fatal(err)
	}
	if _, ok := pending(); ok {
		t.Fatal("a rebuild asked for without a change of zone")
	}
	in.Timezone = "Europe/Berlin"
	got, err := st.UpdateSite(ctx, owner, site, in)
	if err != nil || got.Timezone != "Europe/Berlin" {
		t.Fatalf("UpdateSite: %+v, %v", got, err)
	}
	first, ok := pending()
	if !ok {
		t.Fatal("no rebuild asked for after a change of zone")
	}
	in.Name = "Renamed"
	if _, err := st.UpdateSite(ctx, owner, site, in); err != nil {
		t.Fatal(err)
	}
	if r, _ := pending(); !r.Requested.Equal(first.Requested) {
		t.Fatalf("a rename moved the request from %s to %s", first.Requested, r.Requested)
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE rollup_rebuilds SET last_error = 'boom'`); err != nil {
		t.Fatal(err)
	}
	in.Timezone = "Asia/Tokyo"
	if _, err := st.UpdateSite(ctx, owner, site, in); err != nil {
		t.Fatal(err)
	}
	if r, _ := pending(); !r.Requested.After(first.Requested) || r.LastError != "" {
		t.Fatalf("asked again: %+v, want a time after %s and no error", r, first.Requested)
	}
	// Another user's site is not found, and asks for nothing.
	if _, err := st.UpdateSite(ctx, owner+1000, site, SiteInput{Name: "x", Domain: "x.example.com", Timezone: "UTC"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateSite of another user's site: %v, want ErrNotFound", err)
	}
}

// ownedSite is a new database with the account store over it, a site in UTC and the id
// of its owner.
func ownedSite(t *testing.T) (db *pgtest.DB, st *Store, site, owner int64) {
	t.Helper()
	db = pgtest.New(t)
	st, err := New(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	site = pgtest.NewSite(t, db.Pool, "UTC")
	if err := db.Pool.QueryRow(context.Background(), `SELECT user_id FROM sites WHERE id = $1`, site).Scan(&owner); err != nil {
		t.Fatal(err)
	}
	return db, st, site, owner
}
