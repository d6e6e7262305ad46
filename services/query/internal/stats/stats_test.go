package stats

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/services/writer"
)

// TestSummaryRollupsMatchRawEvents: for every day-aligned period the rollup answer equals
// the raw-events baseline, and pageviews equal what was generated.
func TestSummaryRollupsMatchRawEvents(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	const tz = "America/New_York"
	loc, _ := time.LoadLocation(tz)
	now := time.Date(2026, 11, 27, 15, 0, 0, 0, loc)

	site := pgtest.NewSite(t, db.Pool, tz)
	from := now.AddDate(0, 0, -40)
	if _, err := db.Pool.Exec(ctx, `SELECT ensure_event_partitions($1, $2)`, from, now); err != nil {
		t.Fatal(err)
	}

	r := rand.New(rand.NewPCG(1, 2))
	names := []string{event.PageviewName, event.PageviewName, event.PageviewName, "Signup", event.EngagementName}
	pageviewsToday := 0
	todayStart := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	for i := 0; i < 3000; i++ {
		ts := from.Add(time.Duration(r.Int64N(int64(now.Sub(from)))))
		e, err := event.New(ts, site, names[r.IntN(len(names))])
		if err != nil {
			t.Fatal(err)
		}
		if e.IsPageview() && !e.Time.Before(todayStart) {
			pageviewsToday++
		}
		if _, err := db.Pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id, path, duration_ms)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, site, e.Time, e.ID, e.Name, r.Int64N(200), "/p"+string(rune('a'+r.IntN(5))), r.Int64N(60000)); err != nil {
			t.Fatal(err)
		}
	}
	if err := writer.RebuildRollups(ctx, db.Pool, site, from, now); err != nil {
		t.Fatal(err)
	}

	q, err := New(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"today", "yesterday", "7d", "30d"} {
		t.Run(name, func(t *testing.T) {
			p, err := ParsePeriod(name, now, loc)
			if err != nil {
				t.Fatal(err)
			}
			if !p.DayAligned() {
				t.Fatalf("%s is not day-aligned", name)
			}
			got, err := q.Summary(ctx, site, p)
			if err != nil {
				t.Fatal(err)
			}
			want, err := q.SummaryRaw(ctx, site, p)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("rollups differ from raw events (-raw +rollups):\n%s", diff)
			}
			if got.Pageviews == 0 || got.Visits == 0 {
				t.Fatalf("empty summary %+v", got)
			}
			if name == "today" && got.Pageviews != int64(pageviewsToday) {
				t.Fatalf("today's pageviews = %d, generated %d", got.Pageviews, pageviewsToday)
			}
		})
	}
}

func TestParsePeriod(t *testing.T) {
	loc, _ := time.LoadLocation("Asia/Tokyo")
	now := time.Date(2026, 3, 1, 0, 30, 0, 0, loc) // just after midnight
	tests := []struct {
		name     string
		from, to time.Time
		aligned  bool
	}{
		{"today", time.Date(2026, 3, 1, 0, 0, 0, 0, loc), time.Date(2026, 3, 2, 0, 0, 0, 0, loc), true},
		{"yesterday", time.Date(2026, 2, 28, 0, 0, 0, 0, loc), time.Date(2026, 3, 1, 0, 0, 0, 0, loc), true},
		{"24h", now.Add(-24 * time.Hour), now, false},
		{"7d", time.Date(2026, 2, 23, 0, 0, 0, 0, loc), time.Date(2026, 3, 2, 0, 0, 0, 0, loc), true},
		{"30d", time.Date(2026, 1, 31, 0, 0, 0, 0, loc), time.Date(2026, 3, 2, 0, 0, 0, 0, loc), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePeriod(tt.name, now, loc)
			if err != nil {
				t.Fatal(err)
			}
			if !p.From.Equal(tt.from) || !p.To.Equal(tt.to) || p.DayAligned() != tt.aligned {
				t.Fatalf("%s = [%s, %s) aligned %v; want [%s, %s) aligned %v", tt.name, p.From, p.To, p.DayAligned(), tt.from, tt.to, tt.aligned)
			}
		})
	}
	if _, err := ParsePeriod("fortnight", now, loc); err == nil {
		t.Fatal("unknown period accepted")
	}
}
