package all

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/services/query"
)

// TestSingleBinaryEndToEnd runs `haru -target=all` in-process, with its embedded NATS:
// a beacon in, the SSE push observed, the stats read back, then a clean stop.
func TestSingleBinaryEndToEnd(t *testing.T) {
	db := pgtest.New(t)
	site, key := seed(t, db)
	origin, _, cancel, done := startAllInProcess(t, db.URL)
	checkPipeline(t, origin, origin, site, key)

	// The one port also serves the tracker.
	resp, err := http.Get(origin + "/js/haru.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
		t.Fatalf("GET /js/haru.js = %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel = %v, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not stop within 20s of cancel")
	}
}

// TestLiveRefreshWithoutUpdates: an open live view is recomputed every HARU_LIVE_REFRESH
// even when no event arrives, so figures that depend on the clock ("online now") move
// by themselves.
func TestLiveRefreshWithoutUpdates(t *testing.T) {
	db := pgtest.New(t)
	site, key := seed(t, db)
	origin, _, _, _ := startAllInProcess(t, db.URL, map[string]string{"HARU_LIVE_REFRESH": "1s"})
	frames := openLive(t, fmt.Sprintf("%s/api/v1/sites/%d/live?key=%s", origin, site.ID, key))
	deadline := time.After(10 * time.Second)
	for n := 0; n < 3; n++ { // the frame at connect, then two refreshes
		select {
		case _, ok := <-frames:
			if !ok {
				t.Fatal("live stream ended")
			}
		case <-deadline:
			t.Fatalf("%d frames within 10s with no events, want 3 (at connect and every 1s)", n)
		}
	}
}

// TestThreeTargetsOnMachineNATS runs ingest, writer and query as separate services
// against the machine's NATS server (Debian's 2.9 on CI), so nothing newer than the
// oldest supported server slips in.
func TestThreeTargetsOnMachineNATS(t *testing.T) {
	nc, prefix := natstest.Machine(t)
	nc.Close()
	db := pgtest.New(t)
	site, key := seed(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	env := map[string]string{
		"HARU_NATS_URL":         natstest.MachineURL(),
		"HARU_NATS_PREFIX":      prefix,
		"HARU_DATABASE_URL":     db.URL,
		"HARU_BATCH_AGE":        "20ms",
		"HARU_STREAM_MAX_BYTES": "64MiB",
	}
	ingestHTTP, queryHTTP := freeAddr(t), freeAddr(t)
	readys := map[string]string{}
	done := make(chan error, 3)
	for _, target := range []string{"writer", "query", "ingest"} {
		e := map[string]string{"HARU_OPS_ADDR": freeAddr(t)}
		for k, v := range env {
			e[k] = v
		}
		switch target {
		case "ingest":
			e["HARU_HTTP_ADDR"] = ingestHTTP
		case "query":
			e["HARU_HTTP_ADDR"] = queryHTTP
		}
		readys[target] = "http://" + e["HARU_OPS_ADDR"] + "/readyz"
		go func() { done <- Main(ctx, []string{"-target=" + target}, mapEnv(e), io.Discard) }()
	}
	t.Cleanup(func() {
		cancel()
		for range 3 {
			<-done
		}
		cleanupPrefix(t, prefix)
	})
	for _, u := range readys {
		waitReady(t, u, done)
	}
	checkPipeline(t, "http://"+ingestHTTP, "http://"+queryHTTP, site, key)
}

// checkPipeline sends one beacon to ingest and expects query's live stream to push the
// new figures within a second and its stats endpoint to count the pageview.
func checkPipeline(t *testing.T, ingestOrigin, queryOrigin string, site query.SiteInfo, key string) {
	t.Helper()
	frames := openLive(t, fmt.Sprintf("%s/api/v1/sites/%d/live?key=%s", queryOrigin, site.ID, key))
	if first := <-frames; first.Summary.Pageviews.Value != 0 {
		t.Fatalf("first frame = %+v, want 0 pageviews", first)
	}

	body := `{"p":"/home","r":"https://google.com","sw":1920,"sh":1080}`
	// The registry mirror may still be on its way to ingest: 401 until it arrives.
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, ingestOrigin+"/api/collect", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+site.Token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0")
		var err error
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("collect = %d, want 202", resp.StatusCode)
	}
	sent := time.Now()

	select {
	case f := <-frames:
		if f.Summary.Pageviews.Value != 1 || f.Summary.Visitors.Value != 1 {
			t.Fatalf("live frame = %+v, want 1 pageview, 1 visitor", f.Summary)
		}
		if d := time.Since(sent); d > time.Second {
			t.Errorf("live frame after %s, want within 1s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no live frame within 5s of the beacon")
	}

	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("%s/api/v1/sites/%d/dashboard?period=today", queryOrigin, site.ID), nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got frame
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stats = %d, %v", resp.StatusCode, err)
	}
	if got.Summary.Pageviews.Value != 1 || got.Summary.Visitors.Value != 1 {
		t.Fatalf("stats = %+v, want 1 pageview, 1 visitor", got.Summary)
	}
}

type frame struct {
	Summary struct {
		Pageviews struct{ Value float64 } `json:"pageviews"`
		Visitors  struct{ Value float64 } `json:"visitors"`
	} `json:"summary"`
}

// openLive connects to an SSE stream and delivers each "stats" frame.
func openLive(t *testing.T, url string) <-chan frame {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("live = %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	out := make(chan frame, 16)
	go func() {
		defer resp.Body.Close()
		defer close(out)
		readFrames(ctx, resp.Body, out)
	}()
	return out
}

func seed(t *testing.T, db *pgtest.DB) (query.SiteInfo, string) {
	t.Helper()
	adm, err := query.NewAdmin(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	site, key, err := adm.EnsureDemo(context.Background(), DemoEmail, DemoPassword, "Demo", DemoDomain)
	if err != nil {
		t.Fatal(err)
	}
	return site, key
}

func waitReady(t *testing.T, url string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("service exited before ready: %v", err)
		default:
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not ready within 30s", url)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// cleanupPrefix deletes the stream and buckets a test made on the shared server.
func cleanupPrefix(t *testing.T, prefix string) {
	nc := natstest.Connect(t, natstest.MachineURL())
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	names, _ := event.NewNames(prefix)
	_ = js.DeleteStream(ctx, names.Stream)
	_ = js.DeleteKeyValue(ctx, names.Sites)
	_ = js.DeleteKeyValue(ctx, names.Salts)
}
