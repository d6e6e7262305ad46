package ingest

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest/internal/collect"
)

const (
	testToken = "tok_example"
	firefox   = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
)

// harness is one ingest Service against a private JetStream server, with its site
// registered and its registry loaded.
type harness struct {
	srv    *natstest.Server
	svc    *Service
	app    *fiber.App
	reg    *prometheus.Registry
	stream jetstream.Stream
	names  event.Names
	clock  *clock.Fake
	cfg    Config
}

func newHarness(t testing.TB, site event.Site, edit func(*Config)) *harness {
	t.Helper()
	srv := natstest.New(t)
	nc := srv.Conn(t)
	cfg, err := ConfigFromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cfg.NATS.URL = srv.URL
	cfg.NATS.Stream.MaxBytes = 1 << 20
	cfg.TrustedProxies = []string{"10.0.0.0/8"}
	if edit != nil {
		edit(&cfg)
	}
	if err := cfg.Validate(true); err != nil {
		t.Fatalf("validate: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	names := cfg.NATS.Names()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := natsutil.EnsureSites(ctx, js, names, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := event.EncodeSite(site)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, event.SiteKey(site.Token), b); err != nil {
		t.Fatal(err)
	}

	reg := prometheus.NewRegistry()
	clk := clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	svc, app := startService(t, cfg, reg, clk, nc)
	stream, err := js.Stream(ctx, names.Stream)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{srv: srv, svc: svc, app: app, reg: reg, stream: stream, names: names, clock: clk, cfg: cfg}
}

// startService runs one ingest Service until the test ends and waits for its registry.
func startService(t testing.TB, cfg Config, reg *prometheus.Registry, clk clock.Clock, nc *nats.Conn) (*Service, *fiber.App) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	svc, err := New(ctx, cfg, Deps{
		Log: slog.New(slog.DiscardHandler), Metrics: reg, Health: telemetry.NewHealth(), Clock: clk, NATS: nc,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for !svc.sites.Loaded() {
		if time.Now().After(deadline) {
			t.Fatal("registry not loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	app := fiber.New(AppConfig(slog.New(slog.DiscardHandler)))
	svc.Register(app)
	return svc, app
}

type beacon struct {
	body    string
	token   string // "" sends none; testToken by default via send
	headers map[string]string
}

// send posts b and returns the status and the JSON body (nil when empty).
func (h *harness) send(t testing.TB, b beacon) (int, map[string]any, http.Header) {
	t.Helper()
	return h.sendTo(t, "/api/collect", b)
}

func (h *harness) sendTo(t testing.TB, target string, b beacon) (int, map[string]any, http.Header) {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, target, strings.NewReader(b.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", firefox)
	if b.token != "" {
		req.Header.Set("Authorization", "Bearer "+b.token)
	}
	for k, v := range b.headers {
		req.Header.Set(k, v)
	}
	resp, err := h.app.Test(req, 5000)
	if err != nil {
		t.Fatalf("app.Test: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("answer %q is not JSON: %v", raw, err)
		}
	}
	return resp.StatusCode, out, resp.Header
}

// stored returns how many events the stream holds.
func (h *harness) stored(t *testing.T) uint64 {
	t.Helper()
	info, err := h.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs
}

// last returns the newest stored event of site.
func (h *harness) last(t *testing.T, site int64) event.Event {
	t.Helper()
	msg, err := h.stream.GetLastMsgForSubject(context.Background(), h.names.EventSubject(site))
	if err != nil {
		t.Fatalf("last event: %v", err)
	}
	ev, err := event.Decode(msg.Data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// counter reads one series of a counter vector from the registry (0 when absent).
func (h *harness) counter(t *testing.T, name, label, value string) float64 {
	t.Helper()
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

var testSite = event.Site{ID: 7, Token: testToken, Domain: "example.com", Timezone: "Europe/Berlin"}

func TestCollectAnswers(t *testing.T) {
	h := newHarness(t, testSite, nil)
	big := `{"p":"/` + strings.Repeat("a", collect.MaxBodyBytes) + `"}`
	tests := []struct {
		name   string
		beacon beacon
		status int
		answer map[string]any
	}{
		{"accepted", beacon{body: `{"p":"/"}`, token: testToken}, 202, nil},
		{"no token", beacon{body: `{}`}, 401, map[string]any{"error": ErrNoToken.Error()}},
		{"unknown token", beacon{body: `{}`, token: "nope"}, 401, map[string]any{"error": ErrUnknownToken.Error()}},
		{"null field", beacon{body: `{"p":null}`, token: testToken}, 400, map[string]any{"error": "want a string, got null", "field": "p"}},
		{"float width", beacon{body: `{"sw":1.5}`, token: testToken}, 400, map[string]any{"error": "want an integer, got 1.5", "field": "sw"}},
		{"escaped NUL", beacon{body: `{"n":"a\u0000"}`, token: testToken}, 400, map[string]any{"error": "contains NUL, which cannot be stored", "field": "n"}},
		{"trailing garbage", beacon{body: `{}]`, token: testToken}, 400, map[string]any{"error": "invalid JSON: trailing data after the object"}},
		{"prop object", beacon{body: `{"props":{"k":{}}}`, token: testToken}, 400, map[string]any{"error": "want a string, number or boolean, got an object", "field": "props.k"}},
		{"too large", beacon{body: big, token: testToken}, 413, map[string]any{"error": ErrTooLarge.Error()}},
		{"form content type", beacon{body: `{}`, token: testToken, headers: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}},
			415, map[string]any{"error": ErrContentType.Error()}},
		{"sendBeacon text/plain", beacon{body: `{}`, token: testToken, headers: map[string]string{"Content-Type": "text/plain;charset=UTF-8"}}, 202, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, answer, _ := h.send(t, tt.beacon)
			if diff := cmp.Diff([]any{tt.status, tt.answer}, []any{status, answer}, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("status, answer (-want +got):\n%s", diff)
			}
		})
	}
	status, _, _ := h.sendTo(t, "/api/collect?t="+testToken, beacon{body: `{}`})
	if status != fiber.StatusAccepted {
		t.Fatalf("token in query: status %d, want 202", status)
	}
	if got := h.counter(t, "haru_ingest_requests_total", "status", "400"); got != 5 {
		t.Fatalf("requests_total{status=400} = %v, want 5", got)
	}
}

// TestCollectRefusesCompressedBodies: a compressed body is refused before anything
// unpacks it. Unpacked, this 653-byte request is 128 MiB, and Fiber's c.Body() unpacks
// with no bound: the check must not read the body through it.
func TestCollectRefusesCompressedBodies(t *testing.T) {
	h := newHarness(t, testSite, nil)
	h.withSecret(t, testSite)
	bomb := gzipped(t, gzipped(t, make([]byte, 128<<20)))
	for _, target := range []string{"/api/collect", "/api/batch"} {
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(bomb))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Content-Encoding", "gzip, gzip")
		req.Header.Set("Authorization", "Bearer "+testSecret)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		resp, err := h.app.Test(req, 10000)
		if err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != fiber.StatusUnsupportedMediaType || !strings.Contains(string(raw), ErrEncoding.Error()) {
			t.Errorf("%s: status %d %s, want 415 %q", target, resp.StatusCode, raw, ErrEncoding)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
			t.Errorf("%s: a %d-byte request allocated %d MiB", target, len(bomb), grew>>20)
		}
	}
	// identity is no encoding at all.
	status, _, _ := h.send(t, beacon{body: `{"p":"/"}`, token: testToken, headers: map[string]string{"Content-Encoding": "identity"}})
	if status != fiber.StatusAccepted {
		t.Fatalf("Content-Encoding: identity: status %d, want 202", status)
	}
}

func gzipped(t *testing.T, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCollectBoundsThePagePath: the page path is bounded however it is made, from p,
// from u, or with u's fragment added in hash mode. A longer one Postgres's index on the
// path could refuse, and with it the writer's whole batch.
func TestCollectBoundsThePagePath(t *testing.T) {
	h := newHarness(t, testSite, nil)
	long := strings.Repeat("a", collect.MaxPathLen)
	want := map[string]any{"field": "u", "error": fmt.Sprintf("page path longer than %d bytes", collect.MaxPathLen)}
	for name, body := range map[string]string{
		"path from u":      `{"u":"https://example.com/` + long + `"}`,
		"fragment added":   `{"p":"/` + long[1:] + `","u":"https://example.com/#/x","h":true}`,
		"u's own fragment": `{"u":"https://example.com/` + long[:1500] + `#` + long[:1500] + `","h":true}`,
	} {
		before := h.stored(t)
		status, answer, _ := h.send(t, beacon{body: body, token: testToken})
		if diff := cmp.Diff([]any{400, want}, []any{status, answer}); diff != "" {
			t.Errorf("%s: status, answer (-want +got):\n%s", name, diff)
		}
		if h.stored(t) != before {
			t.Errorf("%s: a refused beacon was stored", name)
		}
	}
	status, _, _ := h.send(t, beacon{body: `{"u":"https://example.com/` + long[1:] + `"}`, token: testToken})
	if got := h.last(t, testSite.ID).Path; status != fiber.StatusAccepted || len(got) != collect.MaxPathLen {
		t.Fatalf("a path of exactly %d bytes: status %d, stored %d bytes", collect.MaxPathLen, status, len(got))
	}
}

// escapeHeavy is a beacon within every limit whose text is all characters JSON encoders
// may escape ('<' is "\u003c" to an HTML-safe one, six bytes for one).
func escapeHeavy() string {
	var b strings.Builder
	b.WriteString(`{"p":"/` + strings.Repeat("<", 2000) + `","r":"https://a.co/` + strings.Repeat("&", 4000) + `","props":{`)
	for i := range collect.MaxProps {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":"%s"`, i, strings.Repeat(">", collect.MaxPropValLen))
	}
	b.WriteString(`}}`)
	return b.String()
}

// TestCollectEscapeHeavyBeacon: a beacon within every limit fits the stream's message
// size however its text is escaped, so it is stored, not answered 503 for ever.
func TestCollectEscapeHeavyBeacon(t *testing.T) {
	h := newHarness(t, testSite, nil)
	body := escapeHeavy()
	if len(body) > collect.MaxBodyBytes {
		t.Fatalf("the beacon is %d bytes, over the limit %d", len(body), collect.MaxBodyBytes)
	}
	if status, answer, _ := h.send(t, beacon{body: body, token: testToken}); status != fiber.StatusAccepted {
		t.Fatalf("status %d %v, want 202", status, answer)
	}
	if got := h.last(t, testSite.ID); got.Path != "/"+strings.Repeat("<", 2000) || len(got.Props) != collect.MaxProps {
		t.Fatalf("stored path of %d bytes and %d props", len(got.Path), len(got.Props))
	}
}

func TestCollectEnriches(t *testing.T) {
	// The test connection's peer, 0.0.0.0, plays a trusted proxy here.
	h := newHarness(t, testSite, func(c *Config) { c.TrustedProxies = []string{"0.0.0.0/32"} })
	tests := []struct {
		name    string
		body    string
		headers map[string]string
		want    event.Event
	}{
		{
			name:    "full beacon",
			body:    `{"n":"signup","u":"https://www.example.com/pricing?utm_source=news&utm_medium=email&utm_campaign=spring","r":"https://www.google.co.uk/","sw":1280,"sh":800,"props":{"plan":"pro","seats":3}}`,
			headers: map[string]string{"X-Forwarded-For": "81.2.69.160", "CF-IPCountry": "DE", "CF-Region-Code": "BE"},
			want: event.Event{Name: "signup", Hostname: "www.example.com", Path: "/pricing", Referrer: "https://www.google.co.uk/",
				RefSource: "Google", UTMSource: "news", UTMMedium: "email", UTMCampaign: "spring",
				Country: "DE", Region: "DE-BE", Browser: "Firefox", OS: "Linux", Device: "Laptop", ScreenW: 1280, ScreenH: 800,
				Props: map[string]string{"plan": "pro", "seats": "3"}},
		},
		{
			name: "self referral dropped, hash path",
			body: `{"u":"https://app.example.com/#/inbox","h":true,"r":"https://app.example.com/#/login","d":1500}`,
			want: event.Event{Name: "pageview", Hostname: "app.example.com", Path: "/#/inbox", Browser: "Firefox", OS: "Linux", Device: "Desktop", DurationMS: 1500},
		},
		{
			name: "tracker fields only",
			body: `{"p":"/home","r":"https://t.co/x","sw":390}`,
			want: event.Event{Name: "pageview", Path: "/home", Referrer: "https://t.co/x", RefSource: "Twitter", Browser: "Firefox", OS: "Linux", Device: "Mobile", ScreenW: 390},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			headers := map[string]string{}
			for k, v := range tt.headers {
				headers[k] = v
			}
			status, answer, _ := h.send(t, beacon{body: tt.body, token: testToken, headers: headers})
			if status != fiber.StatusAccepted {
				t.Fatalf("status = %d (%v), want 202", status, answer)
			}
			got := h.last(t, testSite.ID)
			ignore := cmpopts.IgnoreFields(event.Event{}, "V", "ID", "Time", "SiteID", "Visitor")
			if diff := cmp.Diff(tt.want, got, ignore, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("stored event (-want +got):\n%s", diff)
			}
			if got.SiteID != testSite.ID || got.Visitor == 0 {
				t.Fatalf("site %d visitor %d: want site %d and a visitor id", got.SiteID, got.Visitor, testSite.ID)
			}
		})
	}
}

func TestCollectCountryUntrustedPeer(t *testing.T) {
	// The test connection's peer is 0.0.0.0, not a trusted proxy: CDN headers and
	// X-Forwarded-For are ignored.
	h := newHarness(t, testSite, nil)
	status, _, _ := h.send(t, beacon{body: `{}`, token: testToken, headers: map[string]string{"CF-IPCountry": "DE", "X-Forwarded-For": "81.2.69.160"}})
	if status != fiber.StatusAccepted {
		t.Fatalf("status = %d, want 202", status)
	}
	if got := h.last(t, testSite.ID); got.Country != "" || got.Region != "" {
		t.Fatalf("country %q region %q from an untrusted peer, want none", got.Country, got.Region)
	}
}

func TestCollectDrops(t *testing.T) {
	tests := []struct {
		name    string
		site    event.Site
		body    string
		headers map[string]string
		reason  string // "" means stored
	}{
		{"googlebot", testSite, `{}`, map[string]string{"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, "bot_user_agent"},
		{"headless chrome", testSite, `{}`, map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"}, "bot_user_agent"},
		{"curl counts", testSite, `{"p":"/home"}`, map[string]string{"User-Agent": "curl/8.5.0"}, ""},
		{"prefetch", testSite, `{}`, map[string]string{"Sec-Purpose": "prefetch"}, "prefetch"},
		{"firefox prefetch", testSite, `{}`, map[string]string{"X-Moz": "prefetch"}, "prefetch"},
		{"foreign page", testSite, `{"u":"https://evil.net/"}`, nil, "foreign_host"},
		{"lookalike page", testSite, `{"u":"https://notexample.com/"}`, nil, "foreign_host"},
		{"subdomain page", testSite, `{"u":"https://blog.example.com/"}`, nil, ""},
		{"foreign origin", testSite, `{}`, map[string]string{"Origin": "https://evil.net"}, "foreign_host"},
		{"own origin", testSite, `{}`, map[string]string{"Origin": "https://www.example.com"}, ""},
		{"url beats origin", testSite, `{"u":"https://example.com/"}`, map[string]string{"Origin": "https://evil.net"}, ""},
		{"no page, no origin", testSite, `{}`, nil, ""},
		{"any host allowed", event.Site{ID: 8, Token: testToken, Domain: "example.com", AllowAnyHost: true}, `{"u":"https://evil.net/"}`, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.site, nil)
			status, answer, _ := h.send(t, beacon{body: tt.body, token: testToken, headers: tt.headers})
			if status != fiber.StatusAccepted {
				t.Fatalf("status = %d (%v), want 202", status, answer)
			}
			wantStored := uint64(0)
			if tt.reason == "" {
				wantStored = 1
			}
			if got := h.stored(t); got != wantStored {
				t.Fatalf("stored %d events, want %d", got, wantStored)
			}
			if tt.reason != "" {
				if got := h.counter(t, "haru_ingest_events_dropped_total", "reason", tt.reason); got != 1 {
					t.Fatalf("dropped{reason=%s} = %v, want 1", tt.reason, got)
				}
			}
		})
	}
}

func TestCollectRateLimit(t *testing.T) {
	h := newHarness(t, testSite, func(c *Config) { c.RateLimit = 3; c.RateWindow = time.Minute })
	for i := range 3 {
		if status, answer, _ := h.send(t, beacon{body: `{}`, token: testToken}); status != fiber.StatusAccepted {
			t.Fatalf("beacon %d: status %d (%v), want 202", i, status, answer)
		}
	}
	status, answer, header := h.send(t, beacon{body: `{}`, token: testToken})
	want := []any{fiber.StatusTooManyRequests, map[string]any{"error": ErrRateLimited.Error()}, "60"}
	if diff := cmp.Diff(want, []any{status, answer, header.Get("Retry-After")}); diff != "" {
		t.Fatalf("status, answer, Retry-After (-want +got):\n%s", diff)
	}
	// Another client behind a trusted proxy has its own count.
	h2 := newHarness(t, testSite, func(c *Config) { c.RateLimit = 1; c.TrustedProxies = []string{"0.0.0.0/32"} })
	for _, ip := range []string{"81.2.69.160", "81.2.69.161"} {
		if status, _, _ := h2.send(t, beacon{body: `{}`, token: testToken, headers: map[string]string{"X-Forwarded-For": ip}}); status != fiber.StatusAccepted {
			t.Fatalf("client %s: status %d, want 202", ip, status)
		}
	}
}

// TestCollectNATSDown proves a beacon that cannot be made durable is a prompt 503, never
// a 202 and never a hang.
func TestCollectNATSDown(t *testing.T) {
	h := newHarness(t, testSite, func(c *Config) { c.PublishTimeout = 500 * time.Millisecond })
	if status, _, _ := h.send(t, beacon{body: `{}`, token: testToken}); status != fiber.StatusAccepted {
		t.Fatalf("before shutdown: status %d, want 202", status)
	}
	h.srv.Shutdown()
	start := time.Now()
	status, answer, header := h.send(t, beacon{body: `{}`, token: testToken})
	took := time.Since(start)
	want := []any{fiber.StatusServiceUnavailable, map[string]any{"error": ErrUnavailable.Error()}, "1"}
	if diff := cmp.Diff(want, []any{status, answer, header.Get("Retry-After")}); diff != "" {
		t.Fatalf("status, answer, Retry-After (-want +got):\n%s", diff)
	}
	if took > 2*time.Second {
		t.Fatalf("503 took %s, want about the publish timeout", took)
	}
}

// TestCollectRetryStoredOnce: the tracker's retry of a beacon (the same body, with the
// send id i) is the same event, stored once however many times it comes; other events,
// and beacons without i, are each their own.
func TestCollectRetryStoredOnce(t *testing.T) {
	h := newHarness(t, testSite, nil)
	sends := []struct {
		body   string
		stored uint64 // messages in the stream after it
	}{
		{`{"p":"/a","i":1796515200123}`, 1},
		{`{"p":"/a","i":1796515200123}`, 1}, // a retry
		{`{"p":"/a","i":1796515200123}`, 1}, // and another
		{`{"p":"/a","i":1796515200124}`, 2}, // the next pageview of the same page
		{`{"n":"engagement","p":"/a","d":500,"i":1796515200124}`, 3},
		{`{"p":"/b","i":1796515200124}`, 4},
		{`{"n":"signup","p":"/b","i":1796515200124,"props":{"plan":"pro"}}`, 5},
		{`{"n":"signup","p":"/b","i":1796515200124,"props":{"plan":"team"}}`, 6},
		{`{"p":"/a"}`, 7},
		{`{"p":"/a"}`, 8}, // without i, no two beacons are the same event
	}
	for i, send := range sends {
		if status, answer, _ := h.send(t, beacon{body: send.body, token: testToken}); status != fiber.StatusAccepted {
			t.Fatalf("send %d: status %d (%v), want 202", i, status, answer)
		}
		if got := h.stored(t); got != send.stored {
			t.Fatalf("after send %d (%s): %d events stored, want %d", i, send.body, got, send.stored)
		}
	}
}

// TestCollectSaltUnreachable: the first beacon of a new day needs that day's salt from
// NATS; without NATS it is a prompt 503 too.
func TestCollectSaltUnreachable(t *testing.T) {
	h := newHarness(t, testSite, func(c *Config) { c.PublishTimeout = 300 * time.Millisecond })
	h.srv.Shutdown()
	h.clock.Advance(24 * time.Hour)
	start := time.Now()
	status, _, header := h.send(t, beacon{body: `{}`, token: testToken})
	if status != fiber.StatusServiceUnavailable || header.Get("Retry-After") != "1" {
		t.Fatalf("status %d, Retry-After %q: want 503 and 1", status, header.Get("Retry-After"))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("503 took %s, want about the publish timeout", took)
	}
}

// TestCollectRegistryLoading: before the registry's first load a token cannot be known
// to be unknown, so the answer is 503, never 401.
func TestCollectRegistryLoading(t *testing.T) {
	h := newHarness(t, testSite, nil)
	ctx := context.Background()
	svc, err := New(ctx, h.cfg, Deps{
		Log: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry(), Health: telemetry.NewHealth(),
		Clock: h.clock, NATS: h.srv.Conn(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	app := fiber.New(AppConfig(slog.New(slog.DiscardHandler)))
	svc.Register(app) // and never Run: the registry stays unloaded
	h.app = app
	for _, token := range []string{testToken, "unknown"} {
		status, answer, _ := h.send(t, beacon{body: `{}`, token: token})
		if diff := cmp.Diff([]any{503, map[string]any{"error": ErrUnavailable.Error()}}, []any{status, answer}); diff != "" {
			t.Fatalf("token %q: status, answer (-want +got):\n%s", token, diff)
		}
	}
}

// TestCollectStreamFull proves a full stream (DiscardNew) refuses with 503.
func TestCollectStreamFull(t *testing.T) {
	h := newHarness(t, testSite, nil)
	cfg, err := h.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	sc := cfg.Config
	sc.MaxMsgs = 1
	js, err := jetstream.New(h.srv.Conn(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.UpdateStream(context.Background(), sc); err != nil {
		t.Fatalf("update stream: %v", err)
	}
	if status, _, _ := h.send(t, beacon{body: `{}`, token: testToken}); status != fiber.StatusAccepted {
		t.Fatalf("first: status %d, want 202", status)
	}
	if status, _, _ := h.send(t, beacon{body: `{}`, token: testToken}); status != fiber.StatusServiceUnavailable {
		t.Fatalf("full stream: status %d, want 503", status)
	}
	// The stream gauges show the one stored event and the configured limit.
	got := map[string]float64{}
	mfs, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "haru_ingest_stream_") {
			got[mf.GetName()] = mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if got["haru_ingest_stream_messages"] != 1 || got["haru_ingest_stream_max_bytes"] != float64(h.cfg.NATS.Stream.MaxBytes) ||
		got["haru_ingest_stream_bytes"] <= 0 || got["haru_ingest_stream_info_up"] != 1 {
		t.Fatalf("stream gauges = %v", got)
	}
}

func TestConfigValidate(t *testing.T) {
	base, err := ConfigFromEnv(func(k string) string {
		if k == "HARU_NATS_URL" {
			return "nats://127.0.0.1:4222"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		edit    func(*Config)
		wantErr bool
	}{
		{"defaults", func(*Config) {}, false},
		{"limit off", func(c *Config) { c.RateLimit = 0; c.BatchRateLimit = 0; c.RateWindow = 0 }, false},
		{"batch limit below a batch", func(c *Config) { c.BatchRateLimit = 10 }, true},
		{"short idempotency", func(c *Config) { c.IdempotencyTTL = time.Second }, true},
		{"negative limit", func(c *Config) { c.RateLimit = -1 }, true},
		{"tiny window", func(c *Config) { c.RateWindow = time.Millisecond }, true},
		{"bad proxy", func(c *Config) { c.TrustedProxies = []string{"x"} }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.edit(&c)
			if err := c.Validate(true); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
	if base.RateLimit != 100 || base.RateWindow != time.Minute {
		t.Fatalf("default rate limit %d per %s, want 100 per 1m", base.RateLimit, base.RateWindow)
	}
}

// BenchmarkCollect is one beacon's whole path, JetStream PubAck included, from many
// concurrent clients.
func BenchmarkCollect(b *testing.B) {
	h := newHarness(b, testSite, func(c *Config) { c.RateLimit = 0; c.NATS.Stream.MaxBytes = 1 << 30 })
	body := `{"u":"https://www.example.com/blog/post?utm_source=news","r":"https://www.google.com/","sw":1920,"sh":1080}`
	b.ReportAllocs()
	// Beacons wait for their PubAck, so throughput comes from many in flight at once, as
	// it does behind real connections.
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest(http.MethodPost, "/api/collect", strings.NewReader(body))
			req.Header.Set("Content-Type", "text/plain")
			req.Header.Set("Authorization", "Bearer "+testToken)
			req.Header.Set("User-Agent", firefox)
			resp, err := h.app.Test(req, 5000)
			if err != nil || resp.StatusCode != fiber.StatusAccepted {
				b.Errorf("collect: %v %v", err, resp)
				return
			}
			resp.Body.Close()
		}
	})
}

// BenchmarkCollectHandler is one beacon's whole path as the server runs it: the app's
// handler on a request context reused per worker (as fasthttp's workers reuse theirs),
// JetStream PubAck included, from many concurrent clients. Without app.Test's connection,
// goroutine and HTTP text per request, ns/op and allocs/op are the handler's own plus the
// embedded JetStream server's; cpu-ns/op is their CPU time, which a busy machine disturbs
// far less than the wall time. The beacons vary their User-Agent, address and page.
func BenchmarkCollectHandler(b *testing.B) {
	h := newHarness(b, testSite, func(c *Config) { c.RateLimit = 0; c.NATS.Stream.MaxBytes = 1 << 30 })
	handler := h.app.Handler()
	agents := []string{
		firefox,
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Safari/605.1.15",
		"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Mobile Safari/537.36",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/128.0.0.0 Safari/537.36 Edg/128.0.0.0",
	}
	bodies := []string{
		`{"u":"https://www.example.com/blog/post?utm_source=news","r":"https://www.google.com/","sw":1920,"sh":1080}`,
		`{"u":"https://example.com/pricing","p":"/pricing","r":"https://example.com/","sw":390,"sh":844}`,
		`{"u":"https://example.com/docs/start#install","r":"https://news.ycombinator.com/","sw":1440,"sh":900,"n":"signup","props":{"plan":"pro"}}`,
	}
	addrs := make([]string, 64)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("81.2.%d.%d", i, 10+i)
	}
	peer := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 40000}
	var workers atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	cpu0 := processCPU()
	defer func() {
		// CPU of the whole process per beacon: the handler, the NATS client and the
		// embedded JetStream server with its file store.
		b.ReportMetric(float64(processCPU()-cpu0)/float64(b.N), "cpu-ns/op")
	}()
	b.RunParallel(func(pb *testing.PB) {
		var ctx fasthttp.RequestCtx
		ctx.Init(&fasthttp.Request{}, peer, nil)
		for i := int(workers.Add(1)) * 7; pb.Next(); i++ {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod(fiber.MethodPost)
			ctx.Request.SetRequestURI("/api/collect")
			ctx.Request.Header.SetContentType("text/plain;charset=UTF-8")
			ctx.Request.Header.Set(fiber.HeaderAuthorization, "Bearer "+testToken)
			ctx.Request.Header.SetUserAgent(agents[i%len(agents)])
			ctx.Request.Header.Set(fiber.HeaderXForwardedFor, addrs[i%len(addrs)])
			ctx.Request.Header.Set(fiber.HeaderOrigin, "https://example.com")
			ctx.Request.SetBodyString(bodies[i%len(bodies)])
			handler(&ctx)
			if code := ctx.Response.StatusCode(); code != fiber.StatusAccepted {
				b.Errorf("collect: status %d: %s", code, ctx.Response.Body())
				return
			}
		}
	})
}
