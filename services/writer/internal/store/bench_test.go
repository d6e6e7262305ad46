package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
)

// BenchmarkWrite compares, on 5000-event batches, the full write (events and every
// rollup), the idempotent insert into events alone, and a raw COPY into events.
//
//	go test -run '^$' -bench BenchmarkWrite -benchtime 30x ./services/writer/internal/store/
func BenchmarkWrite(b *testing.B) {
	const size = 5000
	st, pool := newStore(b)
	sites := []int64{pgtest.NewSite(b, pool, "UTC"), pgtest.NewSite(b, pool, "Europe/Berlin"), pgtest.NewSite(b, pool, "America/New_York")}
	r := rand.New(rand.NewPCG(5, 6))
	end := time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC)
	batch := func(b *testing.B) []event.Event {
		b.StopTimer()
		defer b.StartTimer()
		evs := randomEvents(b, r, sites, size, end, 2)
		for i := range evs {
			// Realistic traffic: thousands of visitors a day rather than the tests'
			// forty, each with one country, browser, screen and landing referrer, since
			// the visitor id hashes IP and User-Agent.
			e := &evs[i]
			e.Visitor = r.Int64N(20000)
			v := rand.New(rand.NewPCG(uint64(e.Visitor), 0))
			e.Country = countries[v.IntN(len(countries))]
			e.Region = ""
			if e.Country != "" {
				e.Region = e.Country + "-1"
			}
			e.Browser = browsers[v.IntN(len(browsers))]
			e.ScreenW = widths[v.IntN(len(widths))]
			e.RefSource = sources[v.IntN(len(sources))]
			e.UTMSource, e.UTMMedium, e.UTMCampaign = "", "", ""
			if v.IntN(5) == 0 {
				e.UTMSource, e.UTMMedium, e.UTMCampaign = "news", "email", "spring"
			}
			e.Path = fmt.Sprintf("/p/%d", r.IntN(200))
		}
		return evs
	}
	ctx := context.Background()
	if err := st.EnsureAhead(ctx, end.AddDate(0, -1, 0), end); err != nil {
		b.Fatalf("partitions: %v", err)
	}
	tests := []struct {
		name  string
		write func(b *testing.B, evs []event.Event)
	}{
		{"full", func(b *testing.B, evs []event.Event) {
			if _, err := st.Write(ctx, evs); err != nil {
				b.Fatalf("write: %v", err)
			}
		}},
		{"events_only", func(b *testing.B, evs []event.Event) {
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, st.q.prepare); err != nil {
					return err
				}
				if _, err := tx.CopyFrom(ctx, pgx.Identifier{"staging_events"}, stagingColumns, rows(evs)); err != nil {
					return err
				}
				_, err := tx.Exec(ctx, st.q.insert)
				return err
			})
			if err != nil {
				b.Fatalf("insert: %v", err)
			}
		}},
		{"raw_copy", func(b *testing.B, evs []event.Event) {
			if _, err := pool.CopyFrom(ctx, pgx.Identifier{"events"}, stagingColumns, rows(evs)); err != nil {
				b.Fatalf("copy: %v", err)
			}
		}},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			var n int
			for b.Loop() {
				evs := batch(b)
				tt.write(b, evs)
				n += len(evs)
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
