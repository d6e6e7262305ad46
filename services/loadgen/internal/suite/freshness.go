package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/haru-analytics/haru/services/loadgen/internal/load"
	"github.com/haru-analytics/haru/services/loadgen/internal/rig"
	"github.com/haru-analytics/haru/services/loadgen/internal/sse"
	"github.com/haru-analytics/haru/services/loadgen/internal/traffic"
)

// Matcher pairs accepted beacons with the stream frames that first show them, by counts
// per site: the n-th pageview accepted for a site is shown by the first frame whose count
// (over the site's count at the start) reaches n. Beacons of one site are sent one at a
// time, so accept order is count order.
type Matcher struct {
	mu    sync.Mutex
	sites map[int64]*track
	hist  load.Histogram
}

type track struct {
	accepted []time.Time // accept times not yet shown, oldest first
	shown    int64       // pageviews shown by the newest frame, over the base
	taken    int64       // accepted so far
}

// NewMatcher tracks sites.
func NewMatcher(sites []int64) *Matcher {
	m := &Matcher{sites: map[int64]*track{}}
	for _, s := range sites {
		m.sites[s] = &track{}
	}
	return m
}

// Accept records that the next pageview of site was accepted at t.
func (m *Matcher) Accept(site int64, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tr := m.sites[site]
	tr.taken++
	if tr.taken <= tr.shown {
		// A frame showed it before its answer came back.
		m.hist.Record(0)
		return
	}
	tr.accepted = append(tr.accepted, t)
}

// Shown records a frame received at t showing count pageviews of site over its base.
func (m *Matcher) Shown(site int64, count int64, t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tr := m.sites[site]
	if count <= tr.shown {
		return
	}
	// Of the newly shown pageviews, those already answered are matched now.
	n := min(count, tr.taken) - max(tr.shown, tr.taken-int64(len(tr.accepted)))
	for i := int64(0); i < n; i++ {
		m.hist.Record(t.Sub(tr.accepted[i]))
	}
	if n > 0 {
		tr.accepted = tr.accepted[n:]
	}
	tr.shown = count
}

// Unmatched is how many accepted pageviews no frame has shown yet.
func (m *Matcher) Unmatched() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, tr := range m.sites {
		n += int64(len(tr.accepted))
	}
	return n
}

// Latencies returns the histogram of matched latencies.
func (m *Matcher) Latencies() load.Histogram {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hist
}

// livePaths are the stream of a site's figures: the v1 route, then the route it
// replaced, tried when the first is not found.
var livePaths = []string{"/api/v1/sites/%d/live?key=%s", "/api/sites/%d/live?key=%s"}

// dialLive opens a site's stream on addr, on whichever route the server has.
func dialLive(ctx context.Context, addr string, site int64, key string) (*sse.Stream, error) {
	var err error
	for _, p := range livePaths {
		var s *sse.Stream
		if s, err = sse.Dial(ctx, addr, fmt.Sprintf(p, site, key), 10*time.Second); err == nil {
			return s, nil
		}
		var se *sse.StatusError
		if !errors.As(err, &se) || se.Status != http.StatusNotFound {
			break
		}
	}
	return nil, fmt.Errorf("live stream of site %d: %w", site, err)
}

// firstCount reads a stream's first stats frame and returns the pageviews it shows.
func firstCount(s *sse.Stream, timeout time.Duration) (int64, error) {
	_ = s.SetReadDeadline(time.Now().Add(timeout))
	defer s.SetReadDeadline(time.Time{})
	for {
		f, err := s.Next()
		if err != nil {
			return 0, fmt.Errorf("first frame: %w", err)
		}
		if f.Event != "stats" {
			continue
		}
		n, ok := sse.Pageviews(f.Data)
		if !ok {
			return 0, fmt.Errorf("first frame shows no pageviews: %.200s", f.Data)
		}
		return n, nil
	}
}

// freshnessOptions shape the freshness run.
type freshnessOptions struct {
	Rate     float64 // total beacons/s: the probes and realistic traffic on the other sites
	Duration time.Duration
	Conns    int
	Seed     uint64
	Pool     int
	// ProbeRate is each probe site's pageviews/s.
	ProbeRate float64
}

// freshnessResult is what the freshness run measured.
type freshnessResult struct {
	Background load.Result
	Probes     int64
	Matched    int64
	Unmatched  int64
	P50, P99   time.Duration
	Max        time.Duration
}

// runFreshness watches each probe site with one stream, sends pageviews to the probe
// sites one at a time each and realistic traffic to the others at the remaining rate,
// and measures from each pageview's 202 to the first frame that shows it.
func runFreshness(ctx context.Context, all *rig.Proc, key string, probes []rig.Site, others []rig.Site, o freshnessOptions, log io.Writer) (freshnessResult, error) {
	var res freshnessResult
	ids := make([]int64, len(probes))
	for i, s := range probes {
		ids[i] = s.ID
	}
	m := NewMatcher(ids)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, s := range probes {
		st, err := dialLive(ctx, all.HTTPAddr, s.ID, key)
		if err != nil {
			return res, err
		}
		base, err := firstCount(st, 10*time.Second)
		if err != nil {
			st.Close()
			return res, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			go func() { <-ctx.Done(); st.Close() }()
			for {
				f, err := st.Next()
				if err != nil {
					return
				}
				if n, ok := sse.Pageviews(f.Data); ok && f.Event == "stats" {
					m.Shown(s.ID, n-base, time.Now())
				}
			}
		}()
	}

	probeRate := o.ProbeRate * float64(len(probes))
	bgRate := o.Rate - probeRate
	var probeWG sync.WaitGroup
	var probeErr error
	var errOnce sync.Once
	var sent, acc int64
	var countMu sync.Mutex
	stopAt := time.Now().Add(o.Duration)
	for _, s := range probes {
		probeWG.Add(1)
		go func() {
			defer probeWG.Done()
			n, a, err := sendProbes(ctx, all.HTTPAddr, s, o.ProbeRate, stopAt, m)
			countMu.Lock()
			sent += n
			acc += a
			countMu.Unlock()
			if err != nil {
				errOnce.Do(func() { probeErr = err })
			}
		}()
	}
	var bgErr error
	if bgRate > 0 && len(others) > 0 {
		sites := make([]rig.Site, len(others))
		copy(sites, others)
		ts := make([]traffic.Site, 0, len(sites))
		for _, s := range sites {
			ts = append(ts, s.Site)
		}
		res.Background, bgErr = load.Run(ctx, load.Options{
			URL: "http://" + all.HTTPAddr + "/api/collect", Conns: o.Conns, Rate: bgRate,
			Duration: o.Duration, Seed: o.Seed, Pool: o.Pool,
		}, ts)
	}
	probeWG.Wait()
	if bgErr != nil {
		return res, fmt.Errorf("freshness background: %w", bgErr)
	}
	if probeErr != nil {
		return res, probeErr
	}
	// Let the last pageviews reach the streams.
	deadline := time.Now().Add(15 * time.Second)
	for m.Unmatched() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	h := m.Latencies()
	res.Probes, res.Matched, res.Unmatched = acc, h.Count(), m.Unmatched()
	res.P50, res.P99, res.Max = h.Quantile(.5), h.Quantile(.99), h.Max()
	fmt.Fprintf(log, "freshness at %.0f/s (%d probe sites at %.0f/s each, %d sent, %d accepted; background %s): matched %d, unmatched %d, p50 %s p99 %s max %s\n",
		o.Rate, len(probes), o.ProbeRate, sent, acc, res.Background, res.Matched, res.Unmatched, res.P50, res.P99, res.Max)
	return res, nil
}

// sendProbes sends pageviews to site one at a time at rate until stopAt, telling m of
// each one accepted; it returns how many were sent and accepted.
func sendProbes(ctx context.Context, addr string, site rig.Site, rate float64, stopAt time.Time, m *Matcher) (sent, accepted int64, err error) {
	client := &http.Client{Timeout: 10 * time.Second}
	interval := time.Duration(float64(time.Second) / rate)
	next := time.Now()
	for i := 0; ; i++ {
		if wait := time.Until(next); wait > 0 {
			select {
			case <-ctx.Done():
				return sent, accepted, nil
			case <-time.After(wait):
			}
		}
		if !time.Now().Before(stopAt) || ctx.Err() != nil {
			return sent, accepted, nil
		}
		next = next.Add(interval)
		sent++
		// Many visitors: the address decides the visitor id.
		ok, err := postPageview(ctx, client, addr, site, "/fresh", fmt.Sprintf("10.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255))
		if err != nil {
			continue
		}
		if ok {
			accepted++
			m.Accept(site.ID, time.Now())
		}
	}
}

// postPageview sends one pageview of path on site from a visitor at ip; it reports
// whether the answer was 202.
func postPageview(ctx context.Context, client *http.Client, addr string, site rig.Site, path, ip string) (bool, error) {
	body := fmt.Sprintf(`{"u":"https://%s%s","n":"pageview","sw":1440,"sh":900}`, site.Domain, path)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/api/collect", strings.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+site.Token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15")
	req.Header.Set("X-Forwarded-For", ip)
	resp, err := client.Do(req)
	if err != nil {
		return false, fmt.Errorf("send pageview: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode == http.StatusAccepted, nil
}
