package all

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/proctest"
)

// readFrames sends each "stats" frame of an SSE body to out until the body ends or ctx
// is done.
func readFrames(ctx context.Context, body io.Reader, out chan<- frame) {
	sc := bufio.NewScanner(body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var f frame
		if json.Unmarshal([]byte(data), &f) != nil {
			continue
		}
		select {
		case out <- f:
		case <-ctx.Done():
			return
		}
	}
}

// liveFollower is a dashboard's EventSource: it reads a live stream's frames and, when
// the stream ends or cannot be opened, connects again after the stream's retry delay.
type liveFollower struct {
	frames   chan frame
	connects atomic.Int32
}

func followLive(t *testing.T, url string) *liveFollower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	lf := &liveFollower{frames: make(chan frame, 64)}
	go func() {
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				if resp.StatusCode == http.StatusOK {
					lf.connects.Add(1)
					readFrames(ctx, resp.Body, lf.frames)
				}
				resp.Body.Close()
			}
			select {
			case <-ctx.Done():
			case <-time.After(2 * time.Second): // the stream's "retry: 2000"
			}
		}
	}()
	return lf
}

// waitPageviews waits until a frame shows want pageviews and returns how long it took.
func (lf *liveFollower) waitPageviews(t *testing.T, want int64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	timeout := time.After(within)
	last := int64(-1)
	for {
		select {
		case f := <-lf.frames:
			last = int64(f.Summary.Pageviews.Value)
			if last == want {
				return time.Since(start)
			}
		case <-timeout:
			t.Fatalf("no live frame with %d pageviews within %s (last %d, %d connects)", want, within, last, lf.connects.Load())
		}
	}
}

// storedPageviews counts the pageviews in Postgres.
func (r *crashRig) storedPageviews(ctx context.Context) int64 {
	r.t.Helper()
	var n int64
	if err := r.pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE name = 'pageview'`).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

// statsPageviews reads today's pageviews from a query service's stats API.
func (r *crashRig) statsPageviews(origin string) int64 {
	r.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/sites/%d/dashboard?period=today", origin, r.siteID), nil)
	req.Header.Set("Authorization", "Bearer "+r.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("stats: %v", err)
	}
	defer resp.Body.Close()
	var f frame
	if err := json.NewDecoder(resp.Body).Decode(&f); err != nil || resp.StatusCode != http.StatusOK {
		r.t.Fatalf("stats = %d, %v", resp.StatusCode, err)
	}
	return int64(f.Summary.Pageviews.Value)
}

// TestFaultQueryLosesNATS cuts one query service off NATS (through a proxy; ingest and
// the writer keep theirs) while beacons keep landing, for 5 s (a minute with
// HARU_FAULTS=full). The query service has no figures cache: its stats API stays exact
// throughout, and once NATS is back the open live stream catches up on its own, without
// waiting for another beacon, then follows new ones again.
func TestFaultQueryLosesNATS(t *testing.T) {
	skipShort(t)
	cut := faultDuration(5*time.Second, time.Minute)
	ctx, cancel := context.WithTimeout(context.Background(), cut+2*time.Minute)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	proxy := proctest.StartProxy(t, fmt.Sprintf("127.0.0.1:%d", r.nats.Port))
	q := "http://" + r.startService("query", map[string]string{"HARU_NATS_URL": "nats://" + proxy.Addr})
	lf := followLive(t, fmt.Sprintf("%s/api/v1/sites/%d/live?period=today&key=%s", q, r.siteID, r.apiKey))
	lf.waitPageviews(t, 0, 10*time.Second)

	st := newLoadStats()
	send := func(n int) {
		t.Helper()
		client := &http.Client{Timeout: 5 * time.Second}
		for i := range n {
			r.beacon(client, i, st)
		}
		r.drain(ctx, js, st.accepted.Load())
	}
	r.primeIngest(st)
	send(9)
	lf.waitPageviews(t, r.storedPageviews(ctx), 5*time.Second)

	proxy.Cut()
	t.Logf("query cut off NATS for %s", cut)
	send(50)
	stored := r.storedPageviews(ctx)
	if got := r.statsPageviews(q); got != stored {
		t.Errorf("stats while cut off = %d pageviews, want %d: figures stale", got, stored)
	}
	time.Sleep(cut)
	proxy.Restore()
	lag := lf.waitPageviews(t, stored, 15*time.Second)
	t.Logf("live stream caught up %s after NATS came back (%d connects)", lag.Round(time.Millisecond), lf.connects.Load())

	send(20)
	follow := lf.waitPageviews(t, r.storedPageviews(ctx), 5*time.Second)
	t.Logf("and follows new beacons again: a frame %s after the drain", follow.Round(time.Millisecond))
	report(t, fmt.Sprintf("query cut off NATS for %s", cut), st, r.checkExact(ctx, st), lag)
}
