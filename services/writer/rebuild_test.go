package writer

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/services/writer/internal/store"
)

// TestRebuildAllRollupsAroundRetention: of the days before a site's first raw event,
// one that lies in a month retention dropped while keeping its rollups is left as it is
// (January 31), one without rollups is rebuilt to nothing (January 30); the rest is
// rebuilt from the first raw event's day on.
func TestRebuildAllRollupsAroundRetention(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	site := pgtest.NewSite(t, db.Pool, "UTC")
	st, err := store.New(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	var batch []event.Event
	for i, at := range []time.Time{
		time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 2, 2, 12, 0, 0, 0, time.UTC),
	} {
		e, err := event.New(at, site, "pageview")
		if err != nil {
			t.Fatal(err)
		}
		e.Visitor, e.Path = int64(i+1), "/"
		batch = append(batch, e)
	}
	if _, err := st.Write(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DropPartitionsBefore(ctx, time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	var days []string
	from, to, err := RebuildAllRollups(ctx, db.Pool, site, 1, func(from, to time.Time, took time.Duration) {
		days = append(days, from.Format(time.DateOnly))
	})
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	got := from.Format(time.DateOnly) + ".." + to.Format(time.DateOnly) + " " + strings.Join(days, " ")
	if want := "2026-01-30..2026-02-04 2026-01-30 2026-02-01 2026-02-02 2026-02-03 2026-02-04"; got != want {
		t.Fatalf("rebuilt %s, want %s", got, want)
	}
	var pageviews string
	if err := db.Pool.QueryRow(ctx, `SELECT string_agg(day || ' ' || pageviews, ', ' ORDER BY day) FROM rollup_dims
		WHERE site_id = $1 AND dim = 0`, site).Scan(&pageviews); err != nil {
		t.Fatal(err)
	}
	if want := "2026-01-31 1, 2026-02-01 1, 2026-02-02 1"; pageviews != want {
		t.Fatalf("pageviews per day %q, want %q", pageviews, want)
	}
}
