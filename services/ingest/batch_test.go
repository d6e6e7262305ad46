package ingest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
	"github.com/haru-analytics/haru/services/writer"
)

const testSecret = "hsk_test-secret"

// withSecret registers testSecret for the harness's site, as the registry mirror does,
// and waits until ingest knows it.
func (h *harness) withSecret(t testing.TB, site event.Site) {
	t.Helper()
	js, err := jetstream.New(h.srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), h.names.Sites)
	if err != nil {
		t.Fatal(err)
	}
	site.SecretHash = event.HashSecret(testSecret)
	b, err := event.EncodeSite(site)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{event.SiteKey(site.Token), event.SecretKey(site.SecretHash)} {
		if _, err := kv.Put(context.Background(), key, b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok, _ := h.svc.sites.LookupSecret(testSecret); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("secret not loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// batch posts body to /api/batch with auth ("" sends no Authorization header).
func (h *harness) batch(t testing.TB, auth, body string, headers map[string]string) (int, BatchResponse, map[string]any, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, "/api/batch", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "shop-backend/1.0")
	if auth != "" {
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := h.app.Test(req, 5000)
	if err != nil {
		t.Fatalf("app.Test: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out BatchResponse
	var plain map[string]any
	if err := json.Unmarshal(raw, &plain); err != nil {
		t.Fatalf("answer %q is not JSON: %v", raw, err)
	}
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, plain, resp.Header
}

func events(n int, item string) string {
	return `{"events":[` + strings.TrimSuffix(strings.Repeat(item+",", n), ",") + `]}`
}

// TestBatchRejects: every refusal of a whole batch request, and that nothing is stored.
func TestBatchRejects(t *testing.T) {
	h := newHarness(t, testSite, nil)
	h.withSecret(t, testSite)
	one := `{"events":[{"p":"/a"}]}`
	big := `{"events":[{"p":"/a","props":{"x":"` + strings.Repeat("a", collect.MaxBatchBytes) + `"}}]}`
	tests := []struct {
		name    string
		auth    string
		body    string
		headers map[string]string
		status  int
		field   string
		errHas  string
	}{
		{"no secret", "", one, nil, 401, "", "missing secret"},
		{"wrong secret", "hsk_wrong", one, nil, 401, "", "unknown secret"},
		{"not a bearer", "", one, map[string]string{"Authorization": "Basic " + testSecret}, 401, "", "missing secret"},
		{"public token refused", testToken, one, nil, 401, "", "public token"},
		{"not json", testSecret, `{"events":[{"p":"/a"}`, nil, 400, "events", "invalid JSON"},
		{"no events", testSecret, `{}`, nil, 400, "events", "array"},
		{"empty events", testSecret, `{"events":[]}`, nil, 400, "events", "array"},
		{"events not an array", testSecret, `{"events":{"p":"/a"}}`, nil, 400, "events", "want an array"},
		{"duplicate events", testSecret, `{"events":[{}],"events":[{}]}`, nil, 400, "events", "duplicate"},
		{"trailing data", testSecret, one + `x`, nil, 400, "", "trailing"},
		{"too many events", testSecret, events(collect.MaxBatchItems+1, `{}`), nil, 413, "events", "at most 100"},
		{"oversized body", testSecret, big, nil, 413, "", "too large"},
		{"bad content type", testSecret, one, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, "", "content type"},
		{"bad idempotency key", testSecret, one, map[string]string{"Idempotency-Key": "has space"}, 400, "", "Idempotency-Key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, answer, _ := h.batch(t, tt.auth, tt.body, tt.headers)
			if status != tt.status {
				t.Fatalf("status = %d (%v), want %d", status, answer, tt.status)
			}
			if got, _ := answer["field"].(string); got != tt.field {
				t.Errorf("field = %q, want %q (%v)", got, tt.field, answer)
			}
			if msg, _ := answer["error"].(string); !strings.Contains(msg, tt.errHas) {
				t.Errorf("error = %q, want it to contain %q", msg, tt.errHas)
			}
		})
	}
	if got := h.stored(t); got != 0 {
		t.Fatalf("stored %d events from refused batches", got)
	}
}

// TestBatchItems: each event is answered on its own, in order, and only the accepted
// ones are stored.
func TestBatchItems(t *testing.T) {
	h := newHarness(t, testSite, nil)
	h.withSecret(t, testSite)
	body := `{"events":[
		{"p":"/ok","ua":"` + firefox + `"},
		{"p":"/bad","sw":"wide"},
		{"p":"/bot","ua":"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"},
		{"p":"/badip","ip":"999.1.1.1"},
		{"p":"/nul","n":"a\u0000b"},
		"not an object",
		{"p":"/other-host","u":"https://elsewhere.net/x","ip":"203.0.113.9","ua":"` + firefox + `"}
	]}`
	status, resp, raw, _ := h.batch(t, testSecret, body, nil)
	if status != fiber.StatusAccepted {
		t.Fatalf("status = %d (%v), want 202", status, raw)
	}
	want := []ItemResult{
		{Index: 0, Status: 202, Result: "accepted"},
		{Index: 1, Status: 400, Result: "error", Field: "sw"},
		{Index: 2, Status: 202, Result: "dropped", Reason: "bot_user_agent"},
		{Index: 3, Status: 400, Result: "error", Field: "ip"},
		{Index: 4, Status: 400, Result: "error", Field: "n"},
		{Index: 5, Status: 400, Result: "error"},
		{Index: 6, Status: 202, Result: "accepted"},
	}
	if len(resp.Results) != len(want) {
		t.Fatalf("results = %+v", resp.Results)
	}
	for i, w := range want {
		got := resp.Results[i]
		if got.Index != w.Index || got.Status != w.Status || got.Result != w.Result || got.Field != w.Field || got.Reason != w.Reason {
			t.Errorf("result %d = %+v, want %+v", i, got, w)
		}
		if w.Status == 400 && got.Error == "" {
			t.Errorf("result %d has no error message", i)
		}
	}
	if got := h.stored(t); got != 2 {
		t.Fatalf("stored %d events, want 2", got)
	}
	// The secret proves the owner: a page on another host is kept, unlike on /api/collect.
	if ev := h.last(t, testSite.ID); ev.Path != "/other-host" || ev.Hostname != "elsewhere.net" || ev.Browser != "Firefox" {
		t.Fatalf("last event = %+v", ev)
	}

	// Every event refused: the request is a 400.
	status, _, raw, _ = h.batch(t, testSecret, `{"events":[{"sw":-1},{"d":1.5}]}`, nil)
	if status != fiber.StatusBadRequest {
		t.Fatalf("all refused: status = %d (%v), want 400", status, raw)
	}
}

// TestBatchPageAndSize: an event whose page path, taken from u, is over the limit is
// refused before its key is claimed, so the sender's corrected retry is stored; an
// escape-heavy event within every limit is stored.
func TestBatchPageAndSize(t *testing.T) {
	h := newHarness(t, testSite, nil)
	h.withSecret(t, testSite)
	long := `{"u":"https://example.com/` + strings.Repeat("a", collect.MaxPathLen) + `","key":"k1"}`
	status, resp, raw, _ := h.batch(t, testSecret, `{"events":[`+long+`,`+escapeHeavy()+`]}`, nil)
	if status != fiber.StatusAccepted || len(resp.Results) != 2 {
		t.Fatalf("status = %d (%v), want 202 and two results", status, raw)
	}
	if r := resp.Results[0]; r.Status != 400 || r.Field != "u" {
		t.Errorf("long path: %+v, want 400 on u", r)
	}
	if r := resp.Results[1]; r.Status != 202 || r.Result != "accepted" {
		t.Errorf("escape-heavy: %+v, want accepted", r)
	}
	status, resp, raw, _ = h.batch(t, testSecret, `{"events":[{"p":"/fixed","key":"k1"}]}`, nil)
	if status != fiber.StatusAccepted || resp.Results[0].Result != "accepted" || resp.Results[0].Replayed {
		t.Fatalf("corrected retry: status %d %v, want accepted and not a replay", status, raw)
	}
	if got := h.last(t, testSite.ID).Path; got != "/fixed" {
		t.Fatalf("last path %q, want /fixed", got)
	}
}

// TestBatchVisitor: the sender's per-event IP and User-Agent decide the visitor id and
// the browser, and neither is stored.
func TestBatchVisitor(t *testing.T) {
	h := newHarness(t, testSite, nil)
	h.withSecret(t, testSite)
	chrome := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
	send := func(ip, ua string) event.Event {
		t.Helper()
		status, resp, raw, _ := h.batch(t, testSecret, `{"events":[{"p":"/v","ip":"`+ip+`","ua":"`+ua+`"}]}`, nil)
		if status != 202 || resp.Results[0].Result != "accepted" {
			t.Fatalf("status %d %v", status, raw)
		}
		return h.last(t, testSite.ID)
	}
	a := send("198.51.100.23", firefox)
	b := send("198.51.100.23", firefox)
	c := send("198.51.100.24", firefox)
	d := send("198.51.100.23", chrome)
	if a.Visitor != b.Visitor {
		t.Fatal("same IP and UA gave two visitors")
	}
	if c.Visitor == a.Visitor || d.Visitor == a.Visitor {
		t.Fatal("another IP or UA gave the same visitor")
	}
	if a.Browser != "Firefox" || d.Browser != "Chrome" {
		t.Fatalf("browsers %q %q: the event's ua was not used", a.Browser, d.Browser)
	}
	// Without its own ip and ua, an event is the sender's request's.
	status, _, raw, _ := h.batch(t, testSecret, `{"events":[{"p":"/v"}]}`, nil)
	if status != 202 {
		t.Fatalf("status %d %v", status, raw)
	}
	if e := h.last(t, testSite.ID); e.Visitor == a.Visitor {
		t.Fatal("an event without ip/ua got the visitor of another's ip/ua")
	}

	msgs, err := h.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= msgs.State.LastSeq; seq++ {
		m, err := h.stream.GetMsg(context.Background(), seq)
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range []string{"198.51.100.2", "Mozilla", "Firefox/130", "shop-backend"} {
			if strings.Contains(string(m.Data), raw) {
				t.Fatalf("stored event %s contains %q", m.Data, raw)
			}
		}
	}
}

// TestBatchRateLimit: events per site per window; over it the whole request is a 429
// with Retry-After and nothing of it is stored.
func TestBatchRateLimit(t *testing.T) {
	h := newHarness(t, testSite, func(c *Config) { c.BatchRateLimit = 100; c.RateWindow = time.Minute })
	h.withSecret(t, testSite)
	body := events(60, `{"p":"/r"}`)
	if status, _, raw, _ := h.batch(t, testSecret, body, nil); status != 202 {
		t.Fatalf("first 60: status %d %v", status, raw)
	}
	status, _, _, hdr := h.batch(t, testSecret, body, nil)
	if status != fiber.StatusTooManyRequests || hdr.Get("Retry-After") == "" {
		t.Fatalf("next 60: status %d, Retry-After %q; want 429 with Retry-After", status, hdr.Get("Retry-After"))
	}
	if got := h.stored(t); got != 60 {
		t.Fatalf("stored %d, want 60", got)
	}
	h.clock.Advance(time.Minute)
	if status, _, raw, _ := h.batch(t, testSecret, body, nil); status != 202 {
		t.Fatalf("next window: status %d %v", status, raw)
	}
}

// TestBatchNATSDown: with JetStream gone no event is claimed durable: 503 overall with
// Retry-After, and 503 for each event.
func TestBatchNATSDown(t *testing.T) {
	h := newHarness(t, testSite, func(c *Config) { c.PublishTimeout = 300 * time.Millisecond })
	h.withSecret(t, testSite)
	h.srv.Shutdown()
	start := time.Now()
	status, resp, raw, hdr := h.batch(t, testSecret, `{"events":[{"p":"/a"},{"p":"/b","key":"k1"}]}`, nil)
	if status != fiber.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
		t.Fatalf("status %d %v, want 503 with Retry-After", status, raw)
	}
	for _, r := range resp.Results {
		if r.Status != 503 {
			t.Fatalf("result %+v claims more than 503", r)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("answer took %s", took)
	}
}

// TestBatchIdempotentRetry: a retried request with the same keys publishes the very same
// events (id and time) even after the stream's duplicate window has passed, on another
// replica, and the writer stores each once.
func TestBatchIdempotentRetry(t *testing.T) {
	db := pgtest.New(t)
	siteID := pgtest.NewSite(t, db.Pool, "UTC")
	site := event.Site{ID: siteID, Token: testToken, Domain: "example.com", Timezone: "UTC"}
	h := newHarness(t, site, func(c *Config) { c.NATS.Stream.DuplicateWindow = time.Second })
	h.withSecret(t, site)
	h.clock.Set(time.Now())

	body := `{"events":[{"p":"/one"},{"p":"/two"},{"p":"/three","key":"order-42"}]}`
	hdr := map[string]string{"Idempotency-Key": "req-7"}
	status, first, raw, _ := h.batch(t, testSecret, body, hdr)
	if status != 202 {
		t.Fatalf("first: %d %v", status, raw)
	}
	for _, r := range first.Results {
		if r.Result != "accepted" || r.Replayed {
			t.Fatalf("first: %+v", r)
		}
	}

	// Past the duplicate window, later, on a second replica sharing the NATS server.
	time.Sleep(2500 * time.Millisecond)
	h.clock.Advance(time.Minute)
	other := h.replica(t)
	status, again, raw, _ := other.batch(t, testSecret, body, hdr)
	if status != 202 {
		t.Fatalf("retry: %d %v", status, raw)
	}
	for _, r := range again.Results {
		if r.Result != "accepted" || !r.Replayed {
			t.Fatalf("retry: %+v", r)
		}
	}
	// A new request without the header: only the item with its own key is a replay.
	status, third, raw, _ := h.batch(t, testSecret, body, nil)
	if status != 202 || third.Results[0].Replayed || third.Results[1].Replayed || !third.Results[2].Replayed {
		t.Fatalf("third: %d %v", status, raw)
	}
	// JetStream kept the retry's three (its window had passed), so only the writer can
	// tell them apart; the third request's replay of order-42 came within the window of
	// the retry's and is normally dropped (9 if the machine stalled past the window).
	if got := h.stored(t); got < 3+3+2 || got > 3+3+3 {
		t.Fatalf("stream holds %d messages, want 8 or 9", got)
	}

	// The writer stores the first request's three events and the third's two new ones:
	// the retry's are the same rows.
	wcfg, err := writer.ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	wcfg.NATS = h.cfg.NATS
	wcfg.DatabaseURL = db.URL
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := writer.New(ctx, wcfg, writer.Deps{
		Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(), Health: telemetry.NewHealth(),
		Clock: h.clock, NATS: h.srv.Conn(t), Pool: db.Pool,
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	deadline := time.Now().Add(10 * time.Second)
	for {
		if h.stored(t) == 0 { // the writer acked (removed) every message
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writer left %d messages", h.stored(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE site_id = $1`, siteID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 5 {
		t.Fatalf("events stored = %d, want 5", n)
	}
}

// replica is a second ingest Service on the harness's NATS server and clock.
func (h *harness) replica(t *testing.T) *harness {
	t.Helper()
	r := *h
	r.svc, r.app = startService(t, h.cfg, prometheus.NewRegistry(), h.clock, h.srv.Conn(t))
	return &r
}

// BenchmarkBatchKeyed is one request of 100 events under an Idempotency-Key: every event
// claims its key in the KV bucket and is published before the answer.
func BenchmarkBatchKeyed(b *testing.B) {
	h := newHarness(b, testSite, func(c *Config) { c.BatchRateLimit = 0; c.NATS.Stream.MaxBytes = 1 << 30 })
	h.withSecret(b, testSite)
	body := events(collect.MaxBatchItems, `{"p":"/b","ip":"198.51.100.7","ua":"`+firefox+`"}`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		status, _, raw, _ := h.batch(b, testSecret, body, map[string]string{"Idempotency-Key": fmt.Sprintf("bench-%d", i)})
		if status != fiber.StatusAccepted {
			b.Fatalf("status %d %v", status, raw)
		}
	}
}
