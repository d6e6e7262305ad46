package all

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/proctest"
)

// metricValue reads one series (name plus labels, as /metrics prints it) from an ops
// listener; 0 when absent.
func metricValue(t *testing.T, opsAddr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + opsAddr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}

// rawStatus writes req as is to addr and returns the status of the answer, or 0 and the
// error when the server closed the connection without one.
func rawStatus(addr string, req []byte) (int, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(15 * time.Second))
	// Read while writing: a server may answer (413, 431) before the request is all sent.
	written := make(chan error, 1)
	go func() {
		_, err := c.Write(req)
		written <- err
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		c.Close()
		return 0, fmt.Errorf("%w (write: %v)", err, <-written)
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// collectRequest is a raw beacon request carrying body and extra header lines.
func collectRequest(token, body, extra string) []byte {
	return postRequest("/api/collect", token, body, extra)
}

// postRequest is a raw JSON POST to path with a bearer token, body and extra header lines.
func postRequest(path, token, body, extra string) []byte {
	return []byte("POST " + path + " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0\r\n" +
		"Authorization: Bearer " + token + "\r\n" + extra +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// batchSecret creates the demo site's secret key for the batch endpoint and waits until
// ingest knows it (an unparsable batch is then a 400, not a 401), storing nothing.
func (r *crashRig) batchSecret() string {
	r.t.Helper()
	out := proctest.Run(r.t, r.bin, []string{"admin", "create-site-secret", "-site", strconv.FormatInt(r.siteID, 10)}, r.env, 30*time.Second)
	secret := strings.TrimSpace(out)
	addr := strings.TrimPrefix(r.ingest, "http://")
	deadline := time.Now().Add(45 * time.Second)
	for {
		status, err := rawStatus(addr, postRequest("/api/batch", secret, `{`, ""))
		if status == http.StatusBadRequest {
			return secret
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("ingest never learned the batch secret: %d %v", status, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// statsRequest is a raw GET of the demo site's stats API route (with its query).
func statsRequest(r *crashRig, route string) []byte {
	return []byte(fmt.Sprintf("GET /api/v1/sites/%d/%s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n", r.siteID, route, r.apiKey))
}

// slowClient opens a connection, sends the first part of a request and then nothing;
// it returns how long the server took to close it.
func slowClient(addr, partial string) (time.Duration, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write([]byte(partial)); err != nil {
		return 0, err
	}
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err = io.Copy(io.Discard, c) // returns when the server closes
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, fmt.Errorf("still open after 30 s")
	}
	return time.Since(start), nil
}

// TestAbuseHostileInput sends ingest and query what a hostile client would: oversized,
// deep, huge or broken bodies, control characters, enormous headers and clients too slow
// to finish a request. Each gets a clear 4xx (or, for a stalled client, a closed
// connection), none a 500, and both services keep serving.
func TestAbuseHostileInput(t *testing.T) {
	skipShort(t)
	r := newCrashRig(t)
	ingestAddr := strings.TrimPrefix(r.ingest, "http://")
	queryAddr := strings.TrimPrefix(r.query, "http://")
	st := newLoadStats()
	r.primeIngest(st)
	secret := r.batchSecret()

	// Stalled clients run beside the rest: each waits for the 10 s read timeout.
	type slow struct {
		name string
		took time.Duration
		err  error
	}
	slows := make(chan slow, 4)
	var wg sync.WaitGroup
	for _, tc := range []struct{ name, addr, partial string }{
		{"ingest: headers never finished", ingestAddr, "POST /api/collect HTTP/1.1\r\nHost: localhost\r\n"},
		{"ingest: body never finished", ingestAddr, "POST /api/collect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"p\":"},
		{"query: headers never finished", queryAddr, "GET /api/sites HTTP/1.1\r\nHost: local"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			took, err := slowClient(tc.addr, tc.partial)
			slows <- slow{tc.name, took, err}
		}()
	}

	deep := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	manyProps := make([]string, 0, 400)
	for i := range 400 {
		manyProps = append(manyProps, fmt.Sprintf(`"k%d":"v"`, i))
	}
	hugeHeader := "X-Filler: " + strings.Repeat("a", 100<<10) + "\r\n"
	manyHeaders := strings.Repeat("X-Many: a\r\n", 2000)
	tests := []struct {
		name string
		addr string
		req  []byte
		want int
	}{
		{"body over the collect limit", ingestAddr, collectRequest(r.token, `{"p":"/`+strings.Repeat("a", 20<<10)+`"}`, ""), 413},
		// Announced, not sent: the server answers from the header and closes, and a client
		// still writing a megabyte could see the reset before the answer.
		{"body over the app limit", ingestAddr, []byte(strings.Replace(string(collectRequest(r.token, `{"p":"/`, "")), "Content-Length: 7\r\n", "Content-Length: 1048576\r\n", 1)), 413},
		{"deeply nested unknown field", ingestAddr, collectRequest(r.token, `{"p":"/","x":`+deep[:2000]+deep[len(deep)-2000:]+`}`, ""), 400},
		{"nesting past the body limit", ingestAddr, collectRequest(r.token, deep, ""), 413},
		{"huge object of properties", ingestAddr, collectRequest(r.token, `{"p":"/","props":{`+strings.Join(manyProps, ",")+`}}`, ""), 400},
		{"invalid UTF-8", ingestAddr, collectRequest(r.token, "{\"p\":\"/\xff\xfe\"}", ""), 400},
		{"escaped NUL", ingestAddr, collectRequest(r.token, `{"p":"/a\u0000b"}`, ""), 400},
		{"raw control character", ingestAddr, collectRequest(r.token, "{\"p\":\"/a\x01b\"}", ""), 400},
		{"lone surrogate", ingestAddr, collectRequest(r.token, `{"p":"/\ud800"}`, ""), 400},
		{"not JSON", ingestAddr, collectRequest(r.token, `p=/&r=x`, ""), 400},
		{"JSON null", ingestAddr, collectRequest(r.token, `null`, ""), 400},
		{"empty body", ingestAddr, collectRequest(r.token, ``, ""), 400},
		{"control characters in the token", ingestAddr, collectRequest("\x01\x02", `{"p":"/"}`, ""), 401},
		{"enormous header", ingestAddr, collectRequest(r.token, `{"p":"/"}`, hugeHeader), 431},
		{"two thousand headers", ingestAddr, collectRequest(r.token, `{"p":"/"}`, manyHeaders), 431},
		{"batch: body over the limit (as announced)", ingestAddr, []byte(strings.Replace(string(postRequest("/api/batch", "x", `[`, "")), "Content-Length: 1\r\n", "Content-Length: 10485760\r\n", 1)), 413},
		{"batch: no secret", ingestAddr, postRequest("/api/batch", "", `[{"p":"/"}]`, ""), 401},
		{"batch: the public token as the secret", ingestAddr, postRequest("/api/batch", r.token, `[{"p":"/"}]`, ""), 401},
		{"batch: control characters in the idempotency key", ingestAddr, postRequest("/api/batch", "x", `[{"p":"/"}]`, "Idempotency-Key: a\x01b\r\n"), 400},
		{"batch: not JSON", ingestAddr, postRequest("/api/batch", secret, "\xff{", ""), 400},
		{"batch: an array, not an object", ingestAddr, postRequest("/api/batch", secret, `[{"p":"/"}]`, ""), 400},
		{"batch: deep nesting", ingestAddr, postRequest("/api/batch", secret, `{"events":`+deep[:3000]+deep[len(deep)-3000:]+`}`, ""), 400},
		{"batch: too many events", ingestAddr, postRequest("/api/batch", secret, `{"events":[`+strings.TrimSuffix(strings.Repeat(`{"p":"/"},`, 101), ",")+`]}`, ""), 413},
		{"query: enormous header", queryAddr, []byte("GET /api/sites HTTP/1.1\r\nHost: localhost\r\n" + hugeHeader + "\r\n"), 431},
		{"query: bad period", queryAddr, statsRequest(r, "aggregate?period=%ff%00"), 400},
		{"query: site id past int64", queryAddr, []byte(fmt.Sprintf("GET /api/v1/sites/99999999999999999999999/aggregate HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n", r.apiKey)), 404},
		{"query: NUL in a filter value", queryAddr, statsRequest(r, "breakdown?dimension=page&filter=page:is:%00"), 400},
		{"query: invalid UTF-8 in a filter value", queryAddr, statsRequest(r, "aggregate?filter=page:is:%ff%fe"), 400},
		// A stored page may hold \x01 (ingest refuses only what Postgres cannot store), so
		// a filter on it is a valid query.
		{"query: control character in a filter value", queryAddr, statsRequest(r, "dashboard?filter=page:is_not:%01"), 200},
		{"query: NUL in a property key", queryAddr, statsRequest(r, "breakdown?dimension=prop.a%00b"), 400},
		{"query: invalid UTF-8 in a property filter", queryAddr, statsRequest(r, "aggregate?filter=prop.%ff:is:x"), 400},
		{"query: filter value too long", queryAddr, statsRequest(r, "aggregate?filter=page:is:"+strings.Repeat("a", 1001)), 400},
		{"query: too many filters", queryAddr, statsRequest(r, "aggregate?"+strings.Repeat("filter=page:is:a&", 21)), 400},
		{"query: property key too long", queryAddr, statsRequest(r, "breakdown?dimension=prop."+strings.Repeat("k", 201)), 400},
		{"query: limit past int", queryAddr, statsRequest(r, "breakdown?dimension=page&limit=99999999999999999999"), 400},
		{"query: custom range before the calendar", queryAddr, statsRequest(r, "timeseries?period=custom&from=0001-01-01&to=9999-12-31&interval=hour"), 400},
		{"query: control characters in the key", queryAddr, []byte("GET /api/sites HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer \x01\x7f\r\n\r\n"), 401},
		{"query: long key", queryAddr, []byte("GET /api/sites?key=" + strings.Repeat("k", 4000) + " HTTP/1.1\r\nHost: localhost\r\n\r\n"), 401},
		{"query: request line past the read buffer", queryAddr, []byte("GET /api/sites?key=" + strings.Repeat("k", 9000) + " HTTP/1.1\r\nHost: localhost\r\n\r\n"), 431},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rawStatus(tc.addr, tc.req)
			if got != tc.want {
				t.Errorf("status %d (%v), want %d", got, err, tc.want)
			}
		})
	}

	wg.Wait()
	close(slows)
	for s := range slows {
		if s.err != nil {
			t.Errorf("%s: %v", s.name, s.err)
			continue
		}
		t.Logf("%s: closed after %s", s.name, s.took.Round(10*time.Millisecond))
		if s.took > 15*time.Second {
			t.Errorf("%s: closed after %s, want by the 10 s read timeout", s.name, s.took)
		}
	}

	// Still serving, and nothing was a 500.
	r.alive()
	for _, target := range []string{"ingest", "query"} {
		resp, err := http.Get("http://" + r.ops[target] + "/readyz")
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("%s not ready after the abuse: %v %v", target, resp, err)
		} else {
			resp.Body.Close()
		}
		if log := r.procs[target].Log(); strings.Contains(log, "panic") || strings.Contains(log, "internal error") {
			t.Errorf("%s logged a panic or an internal error:\n%s", target, log)
		}
	}
	if n := metricValue(t, r.ops["ingest"], `haru_ingest_requests_total{status="500"}`); n != 0 {
		t.Errorf("ingest answered 500 %v times", n)
	}
	if !r.beacon(&http.Client{Timeout: 5 * time.Second}, 0, st) {
		t.Errorf("a normal beacon after the abuse was refused: %s", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r.drain(ctx, r.jetstream(t), st.accepted.Load())
	r.checkExact(ctx, st)
}

// TestAbuseForwardedFor: from a peer that is not a trusted proxy, X-Forwarded-For (and
// its cousins) changes neither the rate-limit key nor the visitor id. The same requests
// through a trusted proxy do change both, which shows the headers reach ingest at all.
func TestAbuseForwardedFor(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r := newCrashRig(t)
	js := r.jetstream(t)
	const limit = 10
	untrusted := "http://" + r.startService("ingest", map[string]string{"HARU_RATE_LIMIT": strconv.Itoa(limit)})
	trusted := "http://" + r.startService("ingest", map[string]string{"HARU_RATE_LIMIT": strconv.Itoa(limit), "HARU_TRUSTED_PROXIES": "127.0.0.1/32"})
	client := &http.Client{Timeout: 5 * time.Second}

	// send posts limit+5 beacons on path, each claiming another client address.
	send := func(origin, path string) map[int]int {
		t.Helper()
		got := map[int]int{}
		for i := range limit + 5 {
			body := fmt.Sprintf(`{"p":%q}`, path)
			req, _ := http.NewRequest(http.MethodPost, origin+"/api/collect", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+r.token)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0")
			ip := fmt.Sprintf("198.51.100.%d", i+1)
			req.Header.Set("X-Forwarded-For", ip)
			req.Header.Set("X-Real-IP", ip)
			req.Header.Set("Forwarded", "for="+ip)
			req.Header.Set("True-Client-IP", ip)
			req.Header.Set("CF-Connecting-IP", ip)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			got[resp.StatusCode]++
		}
		return got
	}
	visitors := func(path string) int {
		t.Helper()
		var n int
		if err := r.pool.QueryRow(ctx, `SELECT count(DISTINCT visitor_id) FROM events WHERE path = $1`, path).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// startService waited for each ingest's readiness, which includes its registry: no
	// request has spent any budget yet.
	gotTrusted := send(trusted, "/trusted")
	if gotTrusted[http.StatusAccepted] != limit+5 {
		t.Errorf("through a trusted proxy, %d beacons from %d addresses: %v, want all 202", limit+5, limit+5, gotTrusted)
	}
	gotUntrusted := send(untrusted, "/untrusted")
	if gotUntrusted[http.StatusAccepted] != limit || gotUntrusted[http.StatusTooManyRequests] != 5 {
		t.Errorf("from an untrusted peer, %d beacons claiming %d addresses: %v, want %d × 202 and 5 × 429", limit+5, limit+5, gotUntrusted, limit)
	}
	t.Logf("trusted: %v; untrusted: %v", gotTrusted, gotUntrusted)

	r.drain(ctx, js, int64(gotTrusted[http.StatusAccepted]+gotUntrusted[http.StatusAccepted]))
	if n := visitors("/trusted"); n != limit+5 {
		t.Errorf("through a trusted proxy: %d visitor ids, want %d (one per address)", n, limit+5)
	}
	if n := visitors("/untrusted"); n != 1 {
		t.Errorf("from an untrusted peer claiming %d addresses: %d visitor ids, want 1", limit, n)
	}
}
