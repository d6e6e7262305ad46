package account

import (
	"context"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/pgtest"
)

// TestDeleteSiteWaitsForBatchInFlight: a writer batch that has taken its sites' shared
// lock and read the site as existing (services/writer/internal/store/sql/lock_sites.sql)
// commits its events before the site's deletion, which then removes them; deleting
// first would leave them behind for ever.
func TestDeleteSiteWaitsForBatchInFlight(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	st, err := New(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	site := pgtest.NewSite(t, db.Pool, "UTC")
	var owner int64
	if err := db.Pool.QueryRow(ctx, `SELECT user_id FROM sites WHERE id = $1`, site).Scan(&owner); err != nil {
		t.Fatal(err)
	}
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
