package query

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

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
