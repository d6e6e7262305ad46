package query

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var streamProfiles = flag.String("streamprofiles", "", "BenchmarkLiveStreamMemory writes heap and goroutine profiles with the streams open to this directory")

// liveStreamEnv is a query service on a real listener with one site and an API key;
// path is the site's live stream.
func liveStreamEnv(tb testing.TB, heartbeat time.Duration) (e *webEnv, site int64, path string) {
	tb.Helper()
	e = newWebEnv(tb, "", func(c *Config) { c.APIRateLimit = 1 << 30; c.Heartbeat = heartbeat })
	adm, err := NewAdmin(e.db.Pool)
	if err != nil {
		tb.Fatal(err)
	}
	ctx := context.Background()
	if _, err := adm.CreateUser(ctx, "owner@example.com", "owner-password"); err != nil {
		tb.Fatal(err)
	}
	st, err := adm.CreateSite(ctx, "owner@example.com", "Shop", "shop.example", "UTC")
	if err != nil {
		tb.Fatal(err)
	}
	key, err := adm.CreateAPIKey(ctx, "owner@example.com", "k")
	if err != nil {
		tb.Fatal(err)
	}
	return e, st.ID, fmt.Sprintf("/api/v1/sites/%d/live?period=today&key=%s", st.ID, key)
}

// TestLiveStreamHeartbeatsAndEnd reads a live stream off the wire: a 200 chunked event
// stream with the retry delay and the first frame, heartbeats while nothing changes, a
// frame when the site is updated, and a clean end of the body once the service has closed
// its streams. The request is counted as a 200 of its route.
func TestLiveStreamHeartbeatsAndEnd(t *testing.T) {
	e, site, path := liveStreamEnv(t, 100*time.Millisecond)
	resp, err := http.Get(e.origin + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" ||
		resp.Header.Get("Cache-Control") != "no-cache" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("stream answered %d %v, transfer encoding %v", resp.StatusCode, resp.Header, resp.TransferEncoding)
	}
	lines := make(chan string, 64)
	ended := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
		ended <- sc.Err() // nil at a clean end: the last chunk arrived
	}()
	// until reads lines until want, failing on a frame line that is not expected.
	until := func(want string) {
		t.Helper()
		timeout := time.After(3 * time.Second)
		for {
			select {
			case l := <-lines:
				if l == want {
					return
				}
			case err := <-ended:
				t.Fatalf("stream ended (%v) before %q", err, want)
			case <-timeout:
				t.Fatalf("no %q within 3s", want)
			}
		}
	}
	until("retry: 2000")
	until("event: stats")
	for range 3 {
		until(": ping")
	}
	e.svc.hub.Publish(site) // as the writer's "updated" message would
	until("event: stats")
	until(": ping")

	e.svc.CloseStreams()
	if n := e.svc.hub.Len(); n != 0 { // CloseStreams waits for the streams to end
		t.Fatalf("%d streams subscribed after CloseStreams returned", n)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Fatalf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the stream stayed open after the service closed its streams")
	}
	if got := testutil.ToFloat64(e.svc.metrics.requests.WithLabelValues("/api/v1/sites/:site/live", "200")); got != 1 {
		t.Fatalf("live requests counted with status 200: %v, want 1", got)
	}
}

// BenchmarkLiveStreamMemory opens b.N live streams (a fixed count: -benchtime=2000x) to
// one query service in this process and reports what each costs the process once its
// first frame arrived: live Go heap, goroutine stacks and goroutines. The clients are bare
// connections that read nothing more, so almost all of it is the server's side.
func BenchmarkLiveStreamMemory(b *testing.B) {
	e, _, path := liveStreamEnv(b, time.Minute)
	open := func() net.Conn {
		conn, _ := openLiveStream(b, e, path)
		return conn
	}
	// One stream first, so what any stream needs once is in the baseline.
	conns := []net.Conn{open()}
	b.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	before := streamMemory()
	b.ResetTimer()
	for range b.N {
		conns = append(conns, open())
	}
	b.StopTimer()
	time.Sleep(500 * time.Millisecond) // let the goroutines of the last streams settle
	after := streamMemory()
	n := float64(b.N)
	b.ReportMetric(float64(after.heap-before.heap)/1024/n, "heap-KiB/stream")
	b.ReportMetric(float64(after.stack-before.stack)/1024/n, "stack-KiB/stream")
	b.ReportMetric(float64(after.goroutines-before.goroutines)/n, "goroutines/stream")
	b.ReportMetric(0, "ns/op")
	if dir := *streamProfiles; dir != "" {
		for _, p := range []string{"heap", "goroutine"} {
			f, err := os.Create(filepath.Join(dir, p+".pprof"))
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.Lookup(p).WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
}

// BenchmarkLiveFanout: an update of a site whose live view 1000 streams
// (-fanout-streams) show; an op is one update, from the hub's Publish to the last of the
// streams reading the new frame. The readers run in this process too.
func BenchmarkLiveFanout(b *testing.B) {
	e, site, path := liveStreamEnv(b, time.Minute)
	frames := make(chan struct{}, *fanoutStreams)
	for range *fanoutStreams {
		conn, br := openLiveStream(b, e, path)
		b.Cleanup(func() { conn.Close() })
		_ = conn.SetReadDeadline(time.Time{})
		go func() {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil && err != bufio.ErrBufferFull {
					return
				}
				if string(line) == "event: stats\n" {
					frames <- struct{}{}
				}
			}
		}()
	}
	b.ResetTimer()
	for range b.N {
		e.svc.hub.Publish(site)
		for range *fanoutStreams {
			select {
			case <-frames:
			case <-time.After(10 * time.Second):
				b.Fatal("an update did not reach every stream within 10 s")
			}
		}
	}
}

var fanoutStreams = flag.Int("fanout-streams", 1000, "streams of BenchmarkLiveFanout")

// openLiveStream opens path on e as a bare HTTP/1.1 client and reads up to the end of
// the first frame.
func openLiveStream(tb testing.TB, e *webEnv, path string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	addr := strings.TrimPrefix(e.origin, "http://")
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n", path, addr)
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("open stream: %v, %v", resp, err)
	}
	for { // up to the first frame's data
		line, err := br.ReadString('\n')
		if err != nil {
			tb.Fatalf("first frame: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			return conn, br
		}
	}
}

type memory struct{ heap, stack, goroutines int64 }

// streamMemory is the live heap (after a collection), the stacks and the goroutines.
func streamMemory() memory {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memory{heap: int64(m.HeapAlloc), stack: int64(m.StackInuse), goroutines: int64(runtime.NumGoroutine())}
}

// streamLines reads an event stream's body a line at a time in the background; the
// channel is closed when the body ends.
func streamLines(body io.Reader) <-chan string {
	lines := make(chan string, 64)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// waitEnd fails unless the stream of lines ends within 2 s (heartbeats keep an open one
// busy).
func waitEnd(t *testing.T, lines <-chan string, what string) {
	t.Helper()
	timeout := time.After(2 * time.Second)
	for {
		select {
		case _, ok := <-lines:
			if !ok {
				return
			}
		case <-timeout:
			t.Fatalf("the stream stayed open after %s", what)
		}
	}
}

// waitPings fails unless the stream of lines goes on to send n heartbeats.
func waitPings(t *testing.T, lines <-chan string, n int, what string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for n > 0 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the stream ended after %s", what)
			}
			if l == ": ping" {
				n--
			}
		case <-timeout:
			t.Fatalf("no heartbeat within 5 s after %s", what)
		}
	}
}

// TestAPIStreamsEndWithTheirKeyOrSite: revoking an API key ends the live streams opened
// with it, and only those; deleting the site ends those of every key.
func TestAPIStreamsEndWithTheirKeyOrSite(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site := b.createSite("Shop", "shop.example")
	open := func(name string) (int64, <-chan string) {
		t.Helper()
		key := regexp.MustCompile(`haru_[A-Za-z0-9_-]{32}`).FindString(b.post("/app/account/keys", "name", name).body)
		var id int64
		if err := e.db.Pool.QueryRow(context.Background(), `SELECT id FROM api_keys WHERE name = $1`, name).Scan(&id); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(fmt.Sprintf("%s/api/v1/sites/%d/live?period=today&key=%s", e.origin, site, key))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("live with key %s = %d", name, resp.StatusCode)
		}
		return id, streamLines(resp.Body)
	}
	revoked, gone := open("revoked")
	_, kept := open("kept")
	if a := b.post(fmt.Sprintf("/app/account/keys/%d/delete", revoked)); a.status != http.StatusSeeOther {
		t.Fatalf("revoke = %d", a.status)
	}
	waitEnd(t, gone, "its key was revoked")
	waitPings(t, kept, 3, "another key was revoked")
	if a := b.post(fmt.Sprintf("/app/sites/%d/delete", site), "confirm", "shop.example"); a.status != http.StatusSeeOther {
		t.Fatalf("delete site = %d", a.status)
	}
	waitEnd(t, kept, "its site was deleted")
}

// TestStreamsRememberOnlyRunningStreams: the connection of a live request that started
// no stream (refused, or a HEAD) is not kept under the grants of its request: a proxy
// that sends Bob's stream over the same upstream connection next must not have it closed
// by Ann logging out. Nor is the connection of a stream that ended: the service forgets
// every connection once its viewers are gone.
func TestStreamsRememberOnlyRunningStreams(t *testing.T) {
	e := newWebEnv(t, "")
	ann, bob := e.browser(t), e.browser(t)
	ann.register("ann@example.com", "correct horse battery")
	bob.register("bob@example.com", "correct horse battery")
	annSite, bobSite := ann.createSite("A", "a.example"), bob.createSite("B", "b.example")

	host := strings.TrimPrefix(e.origin, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	br := bufio.NewReader(conn)
	send := func(method, path string, as *browser) *http.Response {
		t.Helper()
		fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nCookie: %s=%s\r\n\r\n", method, path, host, sessionCookie, as.sessionCookie().Value)
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, r := range []struct{ method, query string }{{http.MethodGet, "period=never"}, {http.MethodHead, "period=today"}} {
		resp := send(r.method, fmt.Sprintf("/app/sites/%d/data/live?%s", annSite, r.query), ann)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("%s live?%s closed the connection", r.method, r.query)
		}
	}
	resp := send(http.MethodGet, fmt.Sprintf("/app/sites/%d/data/live?period=today", bobSite), bob)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Bob's stream = %d", resp.StatusCode)
	}
	lines := streamLines(resp.Body)
	ann.post("/logout")
	waitPings(t, lines, 3, "Ann logged out")

	conn.Close() // Bob leaves
	deadline := time.Now().Add(3 * time.Second)
	for {
		e.svc.web.streams.mu.Lock()
		left := len(e.svc.web.streams.conns)
		e.svc.web.streams.mu.Unlock()
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("streams still remember connections under %d keys 3 s after the last viewer left", left)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLiveStreamKeepsItsView: a live stream of the second page of the panels sends the
// second page on every update too, not the first.
func TestLiveStreamKeepsItsView(t *testing.T) {
	e, site, path := liveStreamEnv(t, time.Minute)
	ctx := context.Background()
	if _, err := e.db.Pool.Exec(ctx, `SELECT ensure_event_partitions(now(), now())`); err != nil {
		t.Fatal(err)
	}
	for i, p := range []string{"/first", "/first", "/first", "/second", "/second", "/third"} {
		if _, err := e.db.Pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id, path)
			VALUES ($1, now(), gen_random_uuid(), 'pageview', $2, $3)`, site, i, p); err != nil {
			t.Fatal(err)
		}
	}
	// The last 24 hours are read from the raw events, which the rows below are alone in.
	resp, err := http.Get(e.origin + strings.Replace(path, "period=today", "period=24h", 1) + "&limit=1&page=2")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := streamLines(resp.Body)
	// frame is the next frame's panels.
	frame := func() map[string]json.RawMessage {
		t.Helper()
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatal("the stream ended")
				}
				if data, ok := strings.CutPrefix(l, "data: "); ok {
					var d struct{ Panels map[string]json.RawMessage }
					if err := json.Unmarshal([]byte(data), &d); err != nil {
						t.Fatal(err)
					}
					return d.Panels
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no frame within 5 s")
			}
		}
	}
	want := frame()
	if !strings.Contains(string(want["page"]), `"/second"`) {
		t.Fatalf("first frame's page panel %s, want page 2: /second", want["page"])
	}
	e.svc.hub.Publish(site) // as the writer's "updated" message would
	if diff := cmp.Diff(want, frame()); diff != "" {
		t.Fatalf("panels after the update differ from the stream's view (-want +got):\n%s", diff)
	}
}

// TestAbandonedStreamLetsGoOfItsView: a client that pipelines a request before a live
// stream's and resets the connection makes fasthttp fail to send the first answer and
// never hand the stream its connection. The stream then lets go of its view after
// hijackWait: otherwise anyone with a share link could hold a site's bounded live views
// for ever.
func TestAbandonedStreamLetsGoOfItsView(t *testing.T) {
	defer func(d time.Duration) { hijackWait = d }(hijackWait)
	hijackWait = 300 * time.Millisecond
	e := newWebEnv(t, "")
	ann := e.browser(t)
	ann.register("ann@example.com", "correct horse battery")
	site := ann.createSite("A", "a.example")
	host := strings.TrimPrefix(e.origin, "http://")
	cookie := fmt.Sprintf("Cookie: %s=%s\r\n", sessionCookie, ann.sessionCookie().Value)
	live := fmt.Sprintf("/app/sites/%d/data/live?period=today", site)
	for i := range 30 {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).SetLinger(0) // Close resets the connection
		req := "GET " + live + " HTTP/1.1\r\nHost: " + host + "\r\n" + cookie + "\r\n"
		if _, err := io.WriteString(conn, "HEAD "+live+" HTTP/1.1\r\nHost: "+host+"\r\n"+cookie+"\r\n"+req); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(i%6) * 500 * time.Microsecond)
		conn.Close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for e.svc.hub.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d live views still held after their clients reset", e.svc.hub.Len())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
