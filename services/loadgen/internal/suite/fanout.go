package suite

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/loadgen/internal/sse"
)

// fanoutOptions shape the fan-out run.
type fanoutOptions struct {
	Viewers int
	Rounds  int
	// DialConcurrency is how many viewers connect at once.
	DialConcurrency int
}

// fanoutResult is what the fan-out run measured.
type fanoutResult struct {
	Viewers   int // connected
	DialError string
	// RSS of the query process with one viewer and with all, KiB.
	RSSBefore, RSSAfter int64
	PerViewer           float64 // KiB
	// Breakdown of the growth per viewer from the query process's Go metrics: heap in
	// use and goroutine stacks (KiB), and goroutines.
	HeapPerViewer, StackPerViewer, GoroutinesPerViewer float64
	Updates                                            int64 // viewer × round deliveries expected
	WithinSecond                                       int64 // of those, delivered within 1 s of the beacon's 202
	Missed                                             int64 // not delivered within the round's wait
	P50, P99, Max                                      time.Duration
	// Spread is the longest time, over every site and round, from the first of the
	// site's viewers showing the round to the last: the fan-out alone, without the
	// writer's part.
	Spread      time.Duration
	ConnectTime time.Duration
}

// viewer is one open stream and the time it saw each round.
type viewer struct {
	site   int // index into the sites
	base   int64
	seen   []time.Time // by round, zero until the frame showing it arrived
	reach  int         // rounds shown so far
	stream *sse.Stream
}

// fanout is the viewers of a run.
type fanout struct {
	mu      sync.Mutex
	viewers []*viewer
	reached []atomic.Int64 // by round: viewers that have seen it
}

// runFanout connects o.Viewers streams to query, spread over sites, measures the query
// process's memory per viewer, then sends one pageview per site per round and measures
// how long each viewer waits for the frame that shows it. The viewers stay open (and
// reading) until close is called.
func runFanout(ctx context.Context, query, ingest *rig.Proc, key string, sites []rig.Site, o fanoutOptions, log io.Writer) (res fanoutResult, closeAll func(), err error) {
	f := &fanout{reached: make([]atomic.Int64, o.Rounds+1)}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	closeAll = func() {
		cancel()
		f.mu.Lock()
		for _, v := range f.viewers {
			v.stream.Close()
		}
		f.mu.Unlock()
		wg.Wait()
	}
	defer func() {
		if err != nil {
			closeAll()
		}
	}()

	// One viewer first, so the baseline includes what any stream needs once.
	connect := func(i int) error {
		v := &viewer{site: i % len(sites), seen: make([]time.Time, o.Rounds+1)}
		st, err := dialLive(ctx, query.HTTPAddr, sites[v.site].ID, key)
		if err != nil {
			return err
		}
		v.stream = st
		if v.base, err = firstCount(st, 30*time.Second); err != nil {
			st.Close()
			return err
		}
		f.mu.Lock()
		f.viewers = append(f.viewers, v)
		f.mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.read(v)
		}()
		return nil
	}
	if err := connect(0); err != nil {
		return res, closeAll, err
	}
	time.Sleep(time.Second)
	before, err := query.Memory()
	if err != nil {
		return res, closeAll, err
	}
	res.RSSBefore = before.RSS
	goBefore, err := query.Metrics(ctx)
	if err != nil {
		return res, closeAll, err
	}

	start := time.Now()
	var next atomic.Int64
	next.Store(1)
	var dialErr atomic.Pointer[error]
	var dwg sync.WaitGroup
	for range max(o.DialConcurrency, 1) {
		dwg.Add(1)
		go func() {
			defer dwg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(o.Viewers) || dialErr.Load() != nil || ctx.Err() != nil {
					return
				}
				if err := connect(int(i)); err != nil {
					dialErr.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	dwg.Wait()
	res.ConnectTime = time.Since(start)
	f.mu.Lock()
	res.Viewers = len(f.viewers)
	f.mu.Unlock()
	if e := dialErr.Load(); e != nil {
		res.DialError = (*e).Error()
		fmt.Fprintf(log, "fan-out: connected %d of %d viewers: %v\n", res.Viewers, o.Viewers, *e)
	}
	time.Sleep(2 * time.Second)
	after, err := query.Memory()
	if err != nil {
		return res, closeAll, err
	}
	res.RSSAfter = after.RSS
	goAfter, err := query.Metrics(ctx)
	if err != nil {
		return res, closeAll, err
	}
	if added := float64(res.Viewers - 1); added > 0 {
		res.PerViewer = float64(res.RSSAfter-res.RSSBefore) / added
		grew := func(name string) float64 {
			a, _ := goAfter.Sum(name)
			b, _ := goBefore.Sum(name)
			return (a - b) / added
		}
		res.HeapPerViewer = grew("go_memstats_heap_inuse_bytes") / 1024
		res.StackPerViewer = grew("go_memstats_stack_inuse_bytes") / 1024
		res.GoroutinesPerViewer = grew("go_goroutines")
	}

	// Rounds: one pageview per site, then wait for every viewer to show it.
	accepted := make([][]time.Time, len(sites))
	for i := range accepted {
		accepted[i] = make([]time.Time, o.Rounds+1)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for r := 1; r <= o.Rounds; r++ {
		for i, s := range sites {
			ok, err := postPageview(ctx, client, ingest.HTTPAddr, s, fmt.Sprintf("/fanout/%d", r), fmt.Sprintf("10.200.%d.%d", r/256%256, r%256))
			if err != nil || !ok {
				return res, closeAll, fmt.Errorf("fan-out pageview to site %d: accepted %v: %w", s.ID, ok, err)
			}
			accepted[i][r] = time.Now()
		}
		deadline := time.Now().Add(5 * time.Second)
		for f.reached[r].Load() < int64(res.Viewers) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
	}

	var h load.Histogram
	f.mu.Lock()
	first := make([][]time.Time, len(sites))
	last := make([][]time.Time, len(sites))
	for i := range sites {
		first[i], last[i] = make([]time.Time, o.Rounds+1), make([]time.Time, o.Rounds+1)
	}
	for _, v := range f.viewers {
		for r := 1; r <= o.Rounds; r++ {
			seen := v.seen[r]
			if seen.IsZero() {
				continue
			}
			if fs := first[v.site][r]; fs.IsZero() || seen.Before(fs) {
				first[v.site][r] = seen
			}
			if seen.After(last[v.site][r]) {
				last[v.site][r] = seen
			}
		}
	}
	for i := range sites {
		for r := 1; r <= o.Rounds; r++ {
			res.Spread = max(res.Spread, last[i][r].Sub(first[i][r]))
		}
	}
	for _, v := range f.viewers {
		for r := 1; r <= o.Rounds; r++ {
			res.Updates++
			seen := v.seen[r]
			if seen.IsZero() {
				res.Missed++
				continue
			}
			lat := seen.Sub(accepted[v.site][r])
			h.Record(lat)
			if lat <= time.Second {
				res.WithinSecond++
			}
		}
	}
	f.mu.Unlock()
	res.P50, res.P99, res.Max = h.Quantile(.5), h.Quantile(.99), h.Max()
	fmt.Fprintf(log, "fan-out: %d viewers over %d sites connected in %s; query RSS %s -> %s (%.1f KiB/viewer: heap %.1f KiB, stacks %.1f KiB, %.1f goroutines); %d rounds: %d of %d updates within 1s, %d missed, p50 %s p99 %s max %s, first to last viewer at most %s\n",
		res.Viewers, len(sites), res.ConnectTime.Round(time.Millisecond), mib(res.RSSBefore), mib(res.RSSAfter), res.PerViewer, res.HeapPerViewer, res.StackPerViewer, res.GoroutinesPerViewer,
		o.Rounds, res.WithinSecond, res.Updates, res.Missed, res.P50, res.P99, res.Max, res.Spread)
	return res, closeAll, nil
}

// read consumes v's frames until the stream ends, recording rounds as they show.
func (f *fanout) read(v *viewer) {
	for {
		fr, err := v.stream.Next()
		if err != nil {
			return
		}
		if fr.Event != "stats" {
			continue
		}
		n, ok := sse.Pageviews(fr.Data)
		if !ok {
			continue
		}
		now := time.Now()
		shown := n - v.base
		f.mu.Lock()
		for v.reach < len(v.seen)-1 && int64(v.reach) < shown {
			v.reach++
			v.seen[v.reach] = now
			f.reached[v.reach].Add(1)
		}
		f.mu.Unlock()
	}
}
