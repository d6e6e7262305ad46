package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// rawCopy COPYs the batch into events, encoded as the writer's COPY does, and nothing else.
func rawCopy(ctx context.Context, pool *pgxpool.Pool, batch []event.Event) error {
	ptrs := make([]*event.Event, len(batch))
	for i := range batch {
		ptrs[i] = &batch[i]
	}
	return pool.AcquireFunc(ctx, func(c *pgxpool.Conn) error {
		_, err := pgutil.CopyFrom(ctx, c.Conn().PgConn(), "events", eventColumns, len(ptrs), copyEvent(ptrs))
		return err
	})
}

// BenchmarkWrite compares, on batches of DefaultBatchSize, the full write (events and every
// rollup, visits and first sightings), the idempotent insert into events alone, and a
// raw COPY into events. The three take turns within each iteration, so a machine whose
// load drifts during the run weighs on all three alike; each reports its own rate, and
// ratio is full over events_only. Two traffic shapes:
//
//   - spread: events scattered over two days among 20,000 visitor ids per site, about
//     1.3 events per visitor and day, so nearly every event opens a new visit and a new
//     visitor-day: the costliest shape for visits and first sightings.
//
//   - sessions: visits of a few pageviews and engagements minutes apart, which continue
//     across batches, by visitors who mostly come once a day.
//
//     go test -run '^$' -bench 'BenchmarkWrite$' -benchtime 30x ./services/writer/internal/store/
func BenchmarkWrite(b *testing.B) {
	for _, shape := range shapes {
		b.Run(shape.name, func(b *testing.B) { benchWrite(b, DefaultBatchSize, shape.gen()) })
	}
}

// BenchmarkWriteSizes runs BenchmarkWrite's comparison at several batch sizes: the
// rollups cost less per event in larger batches, the events insert about the same.
//
//	go test -run '^$' -bench BenchmarkWriteSizes -benchtime 10x ./services/writer/internal/store/
//
// An iteration is one batch of each kind, so -benchtime 10x writes ten batches per size.
func BenchmarkWriteSizes(b *testing.B) {
	for _, shape := range shapes {
		for _, size := range []int{2500, 5000, 10000, 20000} {
			b.Run(fmt.Sprintf("%s/batch=%d", shape.name, size), func(b *testing.B) { benchWrite(b, size, shape.gen()) })
		}
	}
}

type generator func(b *testing.B, sites []int64, n int, end time.Time) []event.Event

// shapes are the traffic shapes the write benchmarks run.
var shapes = []struct {
	name string
	gen  func() generator
}{
	{"spread", func() generator {
		r := rand.New(rand.NewPCG(5, 6))
		return func(b *testing.B, sites []int64, n int, end time.Time) []event.Event {
			return benchEvents(b, r, sites, n, end)
		}
	}},
	{"sessions", func() generator {
		s := newSessions(rand.New(rand.NewPCG(7, 8)))
		return func(b *testing.B, sites []int64, n int, end time.Time) []event.Event {
			return s.events(b, sites, n, end)
		}
	}},
}

func benchWrite(b *testing.B, size int, gen generator) {
	st, pool := newStore(b)
	sites := []int64{pgtest.NewSite(b, pool, "UTC"), pgtest.NewSite(b, pool, "Europe/Berlin"), pgtest.NewSite(b, pool, "America/New_York")}
	end := time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC)
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
			// The same insert the full write starts with (COPY, the set-based insert
			// after a redelivery), idempotent on the event key, in a transaction of its
			// own and nothing else.
			ptrs := make([]*event.Event, len(evs))
			for i := range evs {
				ptrs[i] = &evs[i]
			}
			err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
				_, err := st.insertEvents(ctx, tx, ptrs)
				return err
			})
			if err != nil {
				b.Fatalf("insert: %v", err)
			}
		}},
		{"raw_copy", func(b *testing.B, evs []event.Event) {
			if err := rawCopy(ctx, pool, evs); err != nil {
				b.Fatalf("copy: %v", err)
			}
		}},
	}
	spent := make([]time.Duration, len(tests))
	var n int
	for b.Loop() {
		for i, tt := range tests {
			b.StopTimer()
			evs := gen(b, sites, size, end)
			b.StartTimer()
			start := time.Now()
			tt.write(b, evs)
			spent[i] += time.Since(start)
		}
		n += size
	}
	rates := make([]float64, len(tests))
	for i, tt := range tests {
		rates[i] = float64(n) / spent[i].Seconds()
		b.ReportMetric(rates[i], tt.name+"_events/s")
	}
	b.ReportMetric(rates[0]/rates[1], "ratio")
	b.ReportMetric(float64(size), "batch_events")
}

// sessions generates visits as they arrive: each event either continues an open visit a
// few seconds to minutes after its last event, or opens a new one, mostly by a new
// visitor. Open visits carry over from batch to batch.
type sessions struct {
	r    *rand.Rand
	open []*session
	next int64
}

type session struct {
	e    event.Event // the last event, the template of the next
	left int
}

func newSessions(r *rand.Rand) *sessions { return &sessions{r: r} }

func (s *sessions) events(b testing.TB, sites []int64, n int, end time.Time) []event.Event {
	out := make([]event.Event, 0, n)
	for len(out) < n {
		if len(s.open) == 0 || s.r.IntN(4) == 0 {
			s.open = append(s.open, s.start(b, sites, end))
		}
		i := s.r.IntN(len(s.open))
		v := s.open[i]
		e := v.e
		id, err := uuid.NewV7()
		if err != nil {
			b.Fatal(err)
		}
		e.ID = id
		e.Time = e.Time.Add(time.Duration(5+s.r.IntN(240)) * time.Second)
		e.Name, e.DurationMS = "pageview", 0
		if s.r.IntN(3) == 0 {
			e.Name, e.DurationMS = event.EngagementName, s.r.Int64N(60000)
		} else {
			e.Path = fmt.Sprintf("/p/%d", s.r.IntN(200))
		}
		v.e = e
		out = append(out, e)
		if v.left--; v.left == 0 {
			s.open[i] = s.open[len(s.open)-1]
			s.open = s.open[:len(s.open)-1]
		}
	}
	return out
}

// start opens a visit: most visitors are new; some come back the same day.
func (s *sessions) start(b testing.TB, sites []int64, end time.Time) *session {
	ts := end.Add(-time.Duration(s.r.Int64N(int64(48 * time.Hour)))).Truncate(time.Microsecond)
	e := newEvent(b, ts, sites[s.r.IntN(len(sites))], "pageview", 0)
	s.next++
	e.Visitor = s.next
	if s.next > 10 && s.r.IntN(5) == 0 {
		e.Visitor = s.next - 1 - s.r.Int64N(min(s.next-1, 2000))
	}
	v := rand.New(rand.NewPCG(uint64(e.Visitor), 0))
	e.Hostname, e.OS, e.Device = "example.com", "Linux", "Desktop"
	e.Country = countries[v.IntN(len(countries))]
	if e.Country != "" {
		e.Region = e.Country + "-1"
	}
	e.Browser = browsers[v.IntN(len(browsers))]
	e.ScreenW = widths[v.IntN(len(widths))]
	e.RefSource = sources[v.IntN(len(sources))]
	e.Path = fmt.Sprintf("/p/%d", s.r.IntN(200))
	return &session{e: e, left: 2 + s.r.IntN(8)}
}

// benchEvents is realistic traffic: thousands of visitors a day rather than the tests'
// forty, each with one country, browser, screen and landing referrer, since the visitor
// id hashes IP and User-Agent.
func benchEvents(t testing.TB, r *rand.Rand, sites []int64, n int, end time.Time) []event.Event {
	evs := randomEvents(t, r, sites, n, end, 2)
	for i := range evs {
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
