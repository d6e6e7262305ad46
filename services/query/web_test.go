package query

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/telemetry"
)

// webEnv is one query service on a real listener, for browser-like clients.
type webEnv struct {
	svc    *Service
	db     *pgtest.DB
	nc     *nats.Conn
	origin string
}

func newWebEnv(t testing.TB, publicURL string, options ...func(*Config)) *webEnv {
	t.Helper()
	db := pgtest.New(t)
	ns := natstest.New(t)
	nc := ns.Conn(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{NATS: natsutil.Config{Prefix: "haru", Stream: natsutil.DefaultStreamSettings()},
		Heartbeat: 200 * time.Millisecond, PublicURL: publicURL}
	for _, o := range options {
		o(&cfg)
	}
	svc, err := New(context.Background(), cfg, Deps{Log: log, Metrics: prometheus.NewRegistry(), Health: telemetry.NewHealth(),
		Clock: clock.System{}, NATS: nc, Pool: db.Pool})
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(AppConfig(log))
	svc.Register(app)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() {
		svc.CloseStreams()
		_ = app.ShutdownWithTimeout(5 * time.Second)
	})
	return &webEnv{svc: svc, db: db, nc: nc, origin: "http://" + ln.Addr().String()}
}

// browser is a cookie-keeping client that sends what a browser sends on a same-origin
// form post, and does not follow redirects.
type browser struct {
	t      *testing.T
	env    *webEnv
	client *http.Client
	// headers are added to every POST (Origin and Sec-Fetch-Site by default).
	headers map[string]string
}

func (e *webEnv) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, env: e, headers: map[string]string{"Origin": e.origin, "Sec-Fetch-Site": "same-origin"},
		client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type answer struct {
	status   int
	body     string
	location string
	header   http.Header
}

func (b *browser) do(req *http.Request) answer {
	b.t.Helper()
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: string(body), location: resp.Header.Get("Location"), header: resp.Header}
}

func (b *browser) get(path string) answer {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.env.origin+path, nil)
	return b.do(req)
}

func (b *browser) post(path string, form ...string) answer {
	b.t.Helper()
	v := url.Values{}
	for i := 0; i+1 < len(form); i += 2 {
		v.Set(form[i], form[i+1])
	}
	req, _ := http.NewRequest(http.MethodPost, b.env.origin+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, val := range b.headers {
		req.Header.Set(k, val)
	}
	return b.do(req)
}

func (b *browser) register(email, password string) {
	b.t.Helper()
	if a := b.post("/register", "email", email, "password", password); a.status != http.StatusSeeOther || a.location != "/app" {
		b.t.Fatalf("register %s = %d %q: %s", email, a.status, a.location, a.body)
	}
}

// createSite adds a site and returns its id.
func (b *browser) createSite(name, domain string) int64 {
	b.t.Helper()
	a := b.post("/app/sites", "name", name, "domain", domain, "timezone", "Europe/Paris")
	var id int64
	if _, err := fmt.Sscanf(a.location, "/app/sites/%d/settings", &id); a.status != http.StatusSeeOther || err != nil {
		b.t.Fatalf("create site = %d %q: %s", a.status, a.location, a.body)
	}
	return id
}

func (b *browser) sessionCookie() *http.Cookie {
	u, _ := url.Parse(b.env.origin)
	for _, c := range b.client.Jar.Cookies(u) {
		if c.Name == sessionCookie {
			return c
		}
	}
	return nil
}

func TestRegisterLoginLogout(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	a := b.post("/register", "email", "Ann@Example.com", "password", "correct horse battery")
	if a.status != http.StatusSeeOther || a.location != "/app" {
		t.Fatalf("register = %d %q", a.status, a.location)
	}
	set := a.header.Get("Set-Cookie")
	for _, want := range []string{sessionCookie + "=", "HttpOnly", "SameSite=Lax", "path=/"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %q", set, want)
		}
	}
	if strings.Contains(set, "Secure") {
		t.Errorf("Set-Cookie %q is Secure over plain HTTP", set)
	}
	token := b.sessionCookie().Value
	var stored int
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM sessions WHERE token_hash = sha256(convert_to($1, 'UTF8'))`, token).Scan(&stored); err != nil || stored != 1 {
		t.Fatalf("sessions holding the token's SHA-256 = %d, %v; want 1", stored, err)
	}
	if err := e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM sessions WHERE position(convert_to($1, 'UTF8') in token_hash) > 0`, token).Scan(&stored); err != nil || stored != 0 {
		t.Fatalf("sessions holding the raw token = %d, %v; want 0", stored, err)
	}
	if a := b.get("/app"); a.status != http.StatusOK || !strings.Contains(a.body, "Ann@Example.com") {
		t.Fatalf("GET /app = %d, want 200 with the email", a.status)
	}
	for _, p := range []string{"/", "/login", "/register"} {
		if a := b.get(p); a.status != http.StatusSeeOther || a.location != "/app" {
			t.Errorf("logged-in GET %s = %d %q, want a redirect to /app", p, a.status, a.location)
		}
	}
	if a := b.post("/logout"); a.status != http.StatusSeeOther || a.location != "/login" {
		t.Fatalf("logout = %d %q", a.status, a.location)
	}
	if a := b.get("/app"); a.status != http.StatusSeeOther || !strings.HasPrefix(a.location, "/login") {
		t.Fatalf("GET /app after logout = %d %q, want a redirect to /login", a.status, a.location)
	}
	// The old token is dead even if replayed.
	replay := e.browser(t)
	u, _ := url.Parse(e.origin)
	replay.client.Jar.SetCookies(u, []*http.Cookie{{Name: sessionCookie, Value: token}})
	if a := replay.get("/app"); a.status != http.StatusSeeOther {
		t.Fatalf("replayed token after logout = %d, want a redirect", a.status)
	}

	// Emails compare case-insensitively, at login and at registration.
	b2 := e.browser(t)
	if a := b2.post("/login", "email", "ann@EXAMPLE.com", "password", "correct horse battery"); a.status != http.StatusSeeOther {
		t.Fatalf("login with another case = %d: %s", a.status, a.body)
	}
	if a := e.browser(t).post("/register", "email", "ANN@example.com", "password", "another password"); a.status != http.StatusConflict {
		t.Fatalf("register a taken email in another case = %d, want 409", a.status)
	}
	// A login redirect stays on this site's app pages.
	if a := e.browser(t).post("/login?next=//evil.example/app", "email", "ann@example.com", "password", "correct horse battery"); a.location != "/app" {
		t.Fatalf("login with an off-site next went to %q, want /app", a.location)
	}
	if a := e.browser(t).post("/register", "email", "bob@example.com", "password", "short"); a.status != http.StatusBadRequest {
		t.Fatalf("register with a short password = %d, want 400", a.status)
	}
}

// TestLoginHidesEmails: a wrong password and an unknown email get the same answer, and
// take comparable time (both run argon2id).
func TestLoginHidesEmails(t *testing.T) {
	e := newWebEnv(t, "")
	e.browser(t).register("known@example.com", "correct horse battery")
	timed := func(email string) (answer, time.Duration) {
		start := time.Now()
		a := e.browser(t).post("/login", "email", email, "password", "wrong password!")
		return a, time.Since(start)
	}
	timed("unknown@example.com") // the first unknown email makes the dummy hash
	// The fastest of three runs each, so a busy machine's stalls do not decide.
	fastest := func(email string) (answer, time.Duration) {
		a, best := timed(email)
		for range 2 {
			if _, d := timed(email); d < best {
				best = d
			}
		}
		return a, best
	}
	known, tk := fastest("known@example.com")
	unknown, tu := fastest("other@example.com")
	if known.status != http.StatusUnauthorized || unknown.status != known.status {
		t.Fatalf("statuses: known %d, unknown %d; want 401 both", known.status, unknown.status)
	}
	strip := regexp.MustCompile(`value="[^"]*"`)
	if strip.ReplaceAllString(known.body, "") != strip.ReplaceAllString(unknown.body, "") {
		t.Fatal("login answers differ between a known and an unknown email")
	}
	// Both spend an argon2id run (tens of ms); a skipped hash would be ~1 ms.
	if tu < tk/4 {
		t.Fatalf("unknown email answered in %s vs %s for a known one: the hash was skipped", tu, tk)
	}
}

func TestLoginAndRegisterRateLimits(t *testing.T) {
	e := newWebEnv(t, "")
	e.browser(t).register("victim@example.com", "correct horse battery")
	b := e.browser(t)
	for i := 0; i < 5; i++ {
		if a := b.post("/login", "email", "VICTIM@example.com", "password", "guess"); a.status != http.StatusUnauthorized {
			t.Fatalf("attempt %d = %d, want 401", i+1, a.status)
		}
	}
	if a := b.post("/login", "email", "victim@example.com", "password", "correct horse battery"); a.status != http.StatusTooManyRequests {
		t.Fatalf("6th attempt on one email = %d, want 429", a.status)
	}
	// An unknown email is limited the same way: the limit reveals nothing.
	for i := 0; i < 5; i++ {
		b.post("/login", "email", "nobody@example.com", "password", "guess")
	}
	if a := b.post("/login", "email", "nobody@example.com", "password", "guess"); a.status != http.StatusTooManyRequests {
		t.Fatalf("6th attempt on an unknown email = %d, want 429", a.status)
	}
	// Per IP: 20 attempts over any emails.
	for i := 0; i < 20; i++ {
		b.post("/login", "email", fmt.Sprintf("u%d@example.com", i), "password", "guess")
	}
	if a := b.post("/login", "email", "fresh@example.com", "password", "guess"); a.status != http.StatusTooManyRequests {
		t.Fatalf("attempt past the IP's budget = %d, want 429", a.status)
	}
	for i := 0; i < 4; i++ { // one registration above
		b.post("/register", "email", fmt.Sprintf("r%d@example.com", i), "password", "correct horse battery")
	}
	if a := b.post("/register", "email", "r9@example.com", "password", "correct horse battery"); a.status != http.StatusTooManyRequests {
		t.Fatalf("6th registration from one IP = %d, want 429", a.status)
	}
}

// TestCompressedFormsRefused: a compressed form is refused before it is read. fasthttp
// would unpack this gzipped multipart login form, 1 KiB sent, to 256 MiB.
func TestCompressedFormsRefused(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	var packed bytes.Buffer
	zw := gzip.NewWriter(&packed)
	head := "--x\r\nContent-Disposition: form-data; name=\"email\"\r\n\r\n"
	if _, err := zw.Write([]byte(head)); err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(make([]byte, 256<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, e.origin+"/login", bytes.NewReader(packed.Bytes()))
	req.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	req.Header.Set("Content-Encoding", "gzip")
	for k, v := range b.headers {
		req.Header.Set(k, v)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	a := b.do(req)
	runtime.ReadMemStats(&after)
	if a.status != http.StatusUnsupportedMediaType {
		t.Errorf("status %d %q, want 415", a.status, a.body)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("a %d-byte form allocated %d MiB", packed.Len(), grew>>20)
	}
}

func TestCrossSiteRequestsRefused(t *testing.T) {
	e := newWebEnv(t, "https://stats.example.com")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	tests := []struct {
		name    string
		headers map[string]string
		want    int
	}{
		{"same origin", map[string]string{"Sec-Fetch-Site": "same-origin"}, http.StatusSeeOther},
		{"origin only", map[string]string{"Origin": e.origin}, http.StatusSeeOther},
		{"public origin", map[string]string{"Origin": "https://stats.example.com"}, http.StatusSeeOther},
		{"cross site", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, http.StatusForbidden},
		{"same site", map[string]string{"Sec-Fetch-Site": "same-site"}, http.StatusForbidden},
		{"typed address", map[string]string{"Sec-Fetch-Site": "none"}, http.StatusForbidden},
		{"sec-fetch wins", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": e.origin}, http.StatusForbidden},
		{"foreign origin", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"null origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"no header", map[string]string{}, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b.headers = tt.headers
			if a := b.post("/app/sites", "name", "S", "domain", "s.example", "timezone", "UTC"); a.status != tt.want {
				t.Fatalf("status %d, want %d", a.status, tt.want)
			}
		})
	}
	// Every form route is guarded, logged in or not.
	b.headers = map[string]string{"Origin": "https://evil.example"}
	for _, path := range []string{"/login", "/register", "/logout", "/app/account/password", "/app/account/keys",
		"/app/account/delete", "/app/sites/1/rotate", "/app/sites/1/secret", "/app/sites/1/delete", "/app/sites/1/settings", "/app/sites/1/shares",
		"/app/sites/1/shares/1/delete", "/app/account/keys/1/delete", "/share/whatever"} {
		if a := b.post(path); a.status != http.StatusForbidden {
			t.Errorf("cross-site POST %s = %d, want 403", path, a.status)
		}
	}
	var n int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sites`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("sites = %d, %v; want 3 (only the same-origin posts)", n, err)
	}
}

func TestSecureCookieBehindHTTPS(t *testing.T) {
	e := newWebEnv(t, "https://stats.example.com")
	a := e.browser(t).post("/register", "email", "ann@example.com", "password", "correct horse battery")
	if !strings.Contains(a.header.Get("Set-Cookie"), "secure") && !strings.Contains(a.header.Get("Set-Cookie"), "Secure") {
		t.Fatalf("Set-Cookie %q is not Secure with an https public URL", a.header.Get("Set-Cookie"))
	}
	// X-Forwarded-Proto counts from a trusted proxy only.
	for _, tt := range []struct {
		trusted []string
		secure  bool
	}{{nil, false}, {[]string{"10.0.0.0/8"}, false}, {[]string{"127.0.0.1"}, true}} {
		plain := newWebEnv(t, "", func(c *Config) { c.TrustedProxies = tt.trusted })
		b := plain.browser(t)
		b.headers["X-Forwarded-Proto"] = "https"
		a = b.post("/register", "email", "ann@example.com", "password", "correct horse battery")
		if got := strings.Contains(strings.ToLower(a.header.Get("Set-Cookie")), "secure"); got != tt.secure {
			t.Errorf("trusted proxies %v: Set-Cookie %q, want Secure %v", tt.trusted, a.header.Get("Set-Cookie"), tt.secure)
		}
	}
}

// TestRateLimitsCountTheProxiedClient: behind a trusted proxy each client has its own
// budget, while a client cannot escape its own by forging the header.
func TestRateLimitsCountTheProxiedClient(t *testing.T) {
	e := newWebEnv(t, "", func(c *Config) { c.TrustedProxies = []string{"127.0.0.1"} })
	b := e.browser(t)
	register := func(client string, i int) int {
		b.headers["X-Forwarded-For"] = client
		return b.post("/register", "email", fmt.Sprintf("u%d@example.com", i), "password", "correct horse battery").status
	}
	for i := 0; i < 5; i++ {
		if s := register("203.0.113.7", i); s != http.StatusSeeOther {
			t.Fatalf("registration %d = %d", i, s)
		}
	}
	if s := register("203.0.113.7", 5); s != http.StatusTooManyRequests {
		t.Fatalf("6th registration of one client = %d, want 429", s)
	}
	if s := register("1.2.3.4, 203.0.113.7", 6); s != http.StatusTooManyRequests {
		t.Fatalf("a forged left-most hop escaped the limit: %d", s)
	}
	if s := register("198.51.100.9", 7); s != http.StatusSeeOther {
		t.Fatalf("another client behind the proxy = %d, want its own budget", s)
	}
}

// TestEveryRouteAuthorizesTheSite probes each site route as the owner, as another user
// and logged out: another user's site answers exactly like a missing one.
func TestEveryRouteAuthorizesTheSite(t *testing.T) {
	e := newWebEnv(t, "")
	owner, other, anon := e.browser(t), e.browser(t), e.browser(t)
	owner.register("owner@example.com", "correct horse battery")
	other.register("other@example.com", "correct horse battery")
	site := owner.createSite("Shop", "shop.example")
	if a := owner.post(fmt.Sprintf("/app/sites/%d/shares", site), "label", "x"); a.status != http.StatusSeeOther {
		t.Fatalf("create share = %d", a.status)
	}
	var share int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT id FROM share_links`).Scan(&share); err != nil {
		t.Fatal(err)
	}
	gets := []string{"/app/sites/%d", "/app/sites/%d/settings", "/app/sites/%d/data/dashboard?period=today",
		"/app/sites/%d/data/aggregate?period=7d", "/app/sites/%d/data/timeseries?period=30d",
		"/app/sites/%d/data/breakdown?dimension=page", "/app/sites/%d/data/export.csv?period=today"}
	posts := []string{"/app/sites/%d/settings", "/app/sites/%d/rotate", "/app/sites/%d/secret", "/app/sites/%d/delete", "/app/sites/%d/shares",
		"/app/sites/%d/shares/" + fmt.Sprint(share) + "/delete"}
	for _, g := range gets {
		p := fmt.Sprintf(g, site)
		if a := owner.get(p); a.status != http.StatusOK {
			t.Errorf("owner GET %s = %d, want 200", p, a.status)
		}
		if a := other.get(p); a.status != http.StatusNotFound {
			t.Errorf("other user GET %s = %d, want 404", p, a.status)
		}
		missing := fmt.Sprintf(g, site+1000)
		if a := owner.get(missing); a.status != http.StatusNotFound {
			t.Errorf("owner GET missing %s = %d, want 404", missing, a.status)
		}
		a := anon.get(p)
		if strings.Contains(p, "/data/") {
			if a.status != http.StatusUnauthorized || !strings.Contains(a.body, "not logged in") {
				t.Errorf("logged-out GET %s = %d, want 401", p, a.status)
			}
		} else if a.status != http.StatusSeeOther || !strings.HasPrefix(a.location, "/login?next=") {
			t.Errorf("logged-out GET %s = %d %q, want a redirect to log in", p, a.status, a.location)
		}
	}
	// Event streams: the owner's opens (and is closed by the test), others' are 404.
	for _, g := range []string{"/app/sites/%d/status", "/app/sites/%d/data/live?period=today"} {
		if a := other.get(fmt.Sprintf(g, site)); a.status != http.StatusNotFound {
			t.Errorf("other user GET %s = %d, want 404", g, a.status)
		}
		if a := anon.get(fmt.Sprintf(g, site)); a.status != http.StatusUnauthorized {
			t.Errorf("logged-out GET %s = %d, want 401", g, a.status)
		}
		resp := openStream(t, owner, fmt.Sprintf(g, site))
		resp.Body.Close()
	}
	for _, p := range posts {
		if a := other.post(fmt.Sprintf(p, site), "name", "Hijacked", "domain", "evil.example", "timezone", "UTC", "confirm", "shop.example"); a.status != http.StatusNotFound {
			t.Errorf("other user POST %s = %d, want 404", p, a.status)
		}
	}
	var name, token string
	var shares int
	var secret bool
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT name, token, (SELECT count(*) FROM share_links), secret_hash IS NOT NULL
		FROM sites WHERE id = $1`, site).Scan(&name, &token, &shares, &secret); err != nil || name != "Shop" || shares != 1 || secret {
		t.Fatalf("after another user's posts: site %q, %d shares, secret set %v, %v; want untouched", name, shares, secret, err)
	}
	// Another user's API key cannot be revoked through one's own account.
	if a := other.post("/app/account/keys", "name", "k"); a.status != http.StatusOK {
		t.Fatalf("create key = %d", a.status)
	}
	var key int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT id FROM api_keys`).Scan(&key); err != nil {
		t.Fatal(err)
	}
	if a := owner.post(fmt.Sprintf("/app/account/keys/%d/delete", key)); a.status != http.StatusNotFound {
		t.Fatalf("revoking another user's key = %d, want 404", a.status)
	}
}

// openStream opens an event stream as b and checks it answers 200 text/event-stream.
func openStream(t *testing.T, b *browser, path string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.env.origin+path, nil)
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		resp.Body.Close()
		t.Fatalf("GET %s = %d %q, want an event stream", path, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return resp
}

// streamEnds fails unless the stream's body ends within 2 s (heartbeats every 200 ms
// keep an open one busy).
func streamEnds(t *testing.T, resp *http.Response, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, resp.Body)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		resp.Body.Close()
		t.Fatalf("the stream stayed open after %s", what)
	}
}

func TestChangePasswordEndsOtherSessions(t *testing.T) {
	e := newWebEnv(t, "")
	here, there := e.browser(t), e.browser(t)
	here.register("ann@example.com", "correct horse battery")
	if a := there.post("/login", "email", "ann@example.com", "password", "correct horse battery"); a.status != http.StatusSeeOther {
		t.Fatalf("second login = %d", a.status)
	}
	site := here.createSite("Shop", "shop.example")
	stream := openStream(t, there, fmt.Sprintf("/app/sites/%d/data/live?period=today", site))
	if a := here.post("/app/account/password", "current", "wrong one", "password", "new password 123"); a.status != http.StatusBadRequest {
		t.Fatalf("change with a wrong current password = %d, want 400", a.status)
	}
	if a := here.post("/app/account/password", "current", "correct horse battery", "password", "new password 123"); a.status != http.StatusSeeOther {
		t.Fatalf("change password = %d: %s", a.status, a.body)
	}
	streamEnds(t, stream, "the password change")
	if a := there.get("/app"); a.status != http.StatusSeeOther {
		t.Fatalf("other session after the change = %d, want logged out", a.status)
	}
	if a := here.get("/app"); a.status != http.StatusOK {
		t.Fatalf("the changing session = %d, want still logged in", a.status)
	}
	if a := e.browser(t).post("/login", "email", "ann@example.com", "password", "correct horse battery"); a.status != http.StatusUnauthorized {
		t.Fatalf("login with the old password = %d, want 401", a.status)
	}
	if a := e.browser(t).post("/login", "email", "ann@example.com", "password", "new password 123"); a.status != http.StatusSeeOther {
		t.Fatalf("login with the new password = %d", a.status)
	}
}

func TestLogoutEndsStreams(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site := b.createSite("Shop", "shop.example")
	live := openStream(t, b, fmt.Sprintf("/app/sites/%d/data/live?period=today", site))
	status := openStream(t, b, fmt.Sprintf("/app/sites/%d/status", site))
	b.post("/logout")
	streamEnds(t, live, "logout")
	streamEnds(t, status, "logout")
}

// insertData stores one event and one visit of site.
func insertData(t *testing.T, e *webEnv, site int64) {
	t.Helper()
	ctx := context.Background()
	if _, err := e.db.Pool.Exec(ctx, `SELECT ensure_event_partitions(now(), now())`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id, path) VALUES ($1, now(), gen_random_uuid(), 'pageview', 1, '/')`, site); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Pool.Exec(ctx, `INSERT INTO visits (site_id, visitor_id, started_at, ended_at, day, pageviews, events, engagement_ms)
		VALUES ($1, 1, now(), now(), current_date, 1, 0, 0)`, site); err != nil {
		t.Fatal(err)
	}
}

func countRows(t *testing.T, e *webEnv, site int64) int {
	t.Helper()
	var n int
	err := e.db.Pool.QueryRow(context.Background(), `SELECT
		(SELECT count(*) FROM events WHERE site_id = $1) + (SELECT count(*) FROM visits WHERE site_id = $1) +
		(SELECT count(*) FROM sites WHERE id = $1) + (SELECT count(*) FROM share_links WHERE site_id = $1)`, site).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDeleteSiteWithItsData(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site, kept := b.createSite("Shop", "shop.example"), b.createSite("Blog", "blog.example")
	b.post(fmt.Sprintf("/app/sites/%d/shares", site))
	insertData(t, e, site)
	insertData(t, e, kept)
	live := openStream(t, b, fmt.Sprintf("/app/sites/%d/data/live?period=today", site))
	if a := b.post(fmt.Sprintf("/app/sites/%d/delete", site), "confirm", "wrong.example"); a.status != http.StatusBadRequest || countRows(t, e, site) != 4 {
		t.Fatalf("delete without the domain typed = %d, want 400 and nothing deleted", a.status)
	}
	if a := b.post(fmt.Sprintf("/app/sites/%d/delete", site), "confirm", "SHOP.example"); a.status != http.StatusSeeOther {
		t.Fatalf("delete = %d: %s", a.status, a.body)
	}
	streamEnds(t, live, "the site's deletion")
	if n := countRows(t, e, site); n != 0 {
		t.Fatalf("%d rows of the deleted site remain", n)
	}
	if n := countRows(t, e, kept); n != 3 {
		t.Fatalf("the other site has %d rows, want 3 (site, event, rollup)", n)
	}
	if a := b.get(fmt.Sprintf("/app/sites/%d", site)); a.status != http.StatusNotFound {
		t.Fatalf("deleted site's page = %d, want 404", a.status)
	}
}

func TestDeleteAccount(t *testing.T) {
	e := newWebEnv(t, "")
	b, other := e.browser(t), e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	other.register("bob@example.com", "correct horse battery")
	site, kept := b.createSite("Shop", "shop.example"), other.createSite("Blog", "blog.example")
	insertData(t, e, site)
	insertData(t, e, kept)
	b.post("/app/account/keys", "name", "k")
	if a := b.post("/app/account/delete", "password", "wrong password"); a.status != http.StatusBadRequest || countRows(t, e, site) != 3 {
		t.Fatalf("delete with a wrong password = %d, want 400 and nothing deleted", a.status)
	}
	if a := b.post("/app/account/delete", "password", "correct horse battery"); a.status != http.StatusSeeOther {
		t.Fatalf("delete account = %d", a.status)
	}
	var users, keys, sessions int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM api_keys),
		(SELECT count(*) FROM sessions)`).Scan(&users, &keys, &sessions); err != nil {
		t.Fatal(err)
	}
	if users != 1 || keys != 0 || sessions != 1 || countRows(t, e, site) != 0 || countRows(t, e, kept) != 3 {
		t.Fatalf("after deletion: %d users, %d keys, %d sessions, %d rows of the site; want 1, 0, 1, 0",
			users, keys, sessions, countRows(t, e, site))
	}
	if a := b.get("/app"); a.status != http.StatusSeeOther {
		t.Fatalf("deleted account's session = %d, want logged out", a.status)
	}
}

func TestSiteSettings(t *testing.T) {
	e := newWebEnv(t, "https://stats.example.com")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	if a := b.post("/app/sites", "name", "", "domain", "x", "timezone", "UTC"); a.status != http.StatusBadRequest {
		t.Fatalf("create without a name = %d, want 400", a.status)
	}
	if a := b.post("/app/sites", "name", "S", "domain", "x.example", "timezone", "Mars/Olympus"); a.status != http.StatusBadRequest {
		t.Fatalf("create with a bad timezone = %d, want 400", a.status)
	}
	site := b.createSite("Shop", "https://Shop.Example/")
	page := b.get(fmt.Sprintf("/app/sites/%d/settings", site))
	var token string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT token FROM sites WHERE id = $1`, site).Scan(&token); err != nil {
		t.Fatal(err)
	}
	snippet := `&lt;script defer src=&#34;https://stats.example.com/js/haru.js&#34; data-api=&#34;https://stats.example.com&#34; data-token=&#34;` + token + `&#34;&gt;&lt;/script&gt;`
	if !strings.Contains(page.body, snippet) {
		t.Fatalf("settings page lacks the snippet %s", snippet)
	}
	// A timezone change asks for the past days to be counted again; the page says so while
	// a writer has not done it, and names the command that does it at once.
	if rebuild := fmt.Sprintf("haru admin rebuild-rollups -site %d -all", site); !strings.Contains(page.body, rebuild) {
		t.Fatalf("settings page lacks %q", rebuild)
	}
	if strings.Contains(page.body, `id="rebuild"`) {
		t.Fatal("settings page shows a rebuild before any change of zone")
	}
	if a := b.post(fmt.Sprintf("/app/sites/%d/settings", site), "name", "Shop 2", "domain", "shop2.example", "timezone", "Asia/Tokyo"); a.status != http.StatusSeeOther {
		t.Fatalf("edit = %d: %s", a.status, a.body)
	}
	if again := b.get(fmt.Sprintf("/app/sites/%d/settings", site)); !strings.Contains(again.body, `id="rebuild"`) ||
		!strings.Contains(again.body, "Counting the past days again in the new timezone") {
		t.Fatal("settings page after a change of zone does not show the rebuild asked for")
	}
	if dash := b.get(fmt.Sprintf("/app/sites/%d", site)); dash.status != http.StatusOK || !strings.Contains(dash.body, `id="rebuild"`) ||
		!strings.Contains(dash.body, "counted again in Asia/Tokyo") {
		t.Fatalf("dashboard after a change of zone (%d) does not say its past days are being counted again", dash.status)
	}
	// Once a writer has done it, neither page says so.
	if _, err := e.db.Pool.Exec(context.Background(), `DELETE FROM rollup_rebuilds WHERE site_id = $1`, site); err != nil {
		t.Fatal(err)
	}
	if dash := b.get(fmt.Sprintf("/app/sites/%d", site)); strings.Contains(dash.body, `id="rebuild"`) {
		t.Fatal("dashboard still shows the rebuild once done")
	}
	if a := b.post(fmt.Sprintf("/app/sites/%d/rotate", site)); a.status != http.StatusSeeOther {
		t.Fatalf("rotate = %d", a.status)
	}
	var name, domain, tz, rotated string
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT name, domain, timezone, token FROM sites WHERE id = $1`, site).
		Scan(&name, &domain, &tz, &rotated); err != nil {
		t.Fatal(err)
	}
	if name != "Shop 2" || domain != "shop2.example" || tz != "Asia/Tokyo" || rotated == token || len(rotated) < 32 {
		t.Fatalf("after edit and rotate: %q %q %q token changed %v", name, domain, tz, rotated != token)
	}
	// A secret key for the batch endpoint: shown once, stored as its SHA-256.
	a := b.post(fmt.Sprintf("/app/sites/%d/secret", site))
	key := regexp.MustCompile(`hsk_[A-Za-z0-9_-]{43}`).FindString(a.body)
	var stored int
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM sites WHERE id = $1 AND secret_hash = sha256(convert_to($2, 'UTF8'))`,
		site, key).Scan(&stored); a.status != http.StatusOK || key == "" || err != nil || stored != 1 {
		t.Fatalf("create secret = %d, key %q, stored %d, %v", a.status, key, stored, err)
	}
	if again := b.get(fmt.Sprintf("/app/sites/%d/settings", site)); strings.Contains(again.body, key) {
		t.Fatal("the secret key is shown again")
	}
	// Pages carry a strict policy: this origin only, no frames, no Referer.
	csp := page.header.Get("Content-Security-Policy")
	if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || page.header.Get("Referrer-Policy") != "same-origin" {
		t.Fatalf("headers: CSP %q, Referrer-Policy %q", csp, page.header.Get("Referrer-Policy"))
	}
}

func TestSiteStatusTurnsToReceiving(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site := b.createSite("Shop", "shop.example")
	resp := openStream(t, b, fmt.Sprintf("/app/sites/%d/status", site))
	defer resp.Body.Close()
	frames := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				frames <- d
			}
		}
		close(frames)
	}()
	next := func() string {
		select {
		case f := <-frames:
			return f
		case <-time.After(3 * time.Second):
			t.Fatal("no status frame within 3s")
			return ""
		}
	}
	if f := next(); f != `"waiting"` {
		t.Fatalf("first status %s, want waiting", f)
	}
	insertData(t, e, site)
	if err := e.nc.Publish(e.svc.names.UpdatedSubject(site), nil); err != nil {
		t.Fatal(err)
	}
	if f := next(); f != `"receiving"` {
		t.Fatalf("status after the first event %s, want receiving", f)
	}
}

func TestAPIKeysInSettings(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	a := b.post("/app/account/keys", "name", "reports")
	key := regexp.MustCompile(`haru_[A-Za-z0-9_-]{32}`).FindString(a.body)
	if a.status != http.StatusOK || key == "" {
		t.Fatalf("create key = %d, no key shown", a.status)
	}
	if later := b.get("/app/account"); strings.Contains(later.body, key) || !strings.Contains(later.body, "reports") {
		t.Fatal("the key is shown again, or its name is not listed")
	}
	call := func() int {
		req, _ := http.NewRequest(http.MethodGet, e.origin+"/api/sites", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := call(); s != http.StatusOK {
		t.Fatalf("API with the new key = %d", s)
	}
	var id int64
	if err := e.db.Pool.QueryRow(context.Background(), `SELECT id FROM api_keys`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	if a := b.post(fmt.Sprintf("/app/account/keys/%d/delete", id)); a.status != http.StatusSeeOther {
		t.Fatalf("revoke = %d", a.status)
	}
	if s := call(); s != http.StatusUnauthorized {
		t.Fatalf("API with the revoked key = %d, want 401", s)
	}
}

func TestShareLinks(t *testing.T) {
	e := newWebEnv(t, "")
	owner := e.browser(t)
	owner.register("ann@example.com", "correct horse battery")
	site := owner.createSite("Shop", "shop.example")
	owner.post(fmt.Sprintf("/app/sites/%d/shares", site), "label", "open")
	owner.post(fmt.Sprintf("/app/sites/%d/shares", site), "label", "locked", "password", "share secret")
	if a := owner.post(fmt.Sprintf("/app/sites/%d/shares", site), "password", "short"); a.status != http.StatusBadRequest {
		t.Fatalf("share password of 5 characters = %d, want 400", a.status)
	}
	slugs := map[string]string{}
	ids := map[string]int64{}
	rows, _ := e.db.Pool.Query(context.Background(), `SELECT id, label, slug FROM share_links`)
	for rows.Next() {
		var id int64
		var label, slug string
		_ = rows.Scan(&id, &label, &slug)
		slugs[label], ids[label] = slug, id
	}
	if len(slugs["open"]) < 32 {
		t.Fatalf("slug %q: want at least 32 random characters", slugs["open"])
	}
	if page := owner.get(fmt.Sprintf("/app/sites/%d/settings", site)); !strings.Contains(page.body, "/share/"+slugs["open"]) {
		t.Fatal("settings page does not list the share link")
	}

	visitor := e.browser(t)
	open := "/share/" + slugs["open"]
	if a := visitor.get(open); a.status != http.StatusOK || !strings.Contains(a.body, `data-base="`+open+`/data"`) ||
		strings.Contains(a.body, "/settings") || strings.Contains(a.body, "Log out") {
		t.Fatalf("open link = %d; want a read-only dashboard", a.status)
	}
	dataRoutes := []string{"/data/dashboard?period=today", "/data/aggregate?period=7d", "/data/timeseries?period=30d",
		"/data/breakdown?dimension=source", "/data/export.csv?period=today"}
	for _, r := range dataRoutes {
		if a := visitor.get(open + r); a.status != http.StatusOK {
			t.Fatalf("open link %s = %d", r, a.status)
		}
	}
	for _, bad := range []string{"/share/nope", "/share/" + slugs["open"] + "x", "/share/nope/data/dashboard"} {
		if a := visitor.get(bad); a.status != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", bad, a.status)
		}
	}
	live := openStream(t, visitor, open+"/data/live?period=today")
	owner.post(fmt.Sprintf("/app/sites/%d/shares/%d/delete", site, ids["open"]))
	streamEnds(t, live, "the link's revocation")
	if a := visitor.get(open); a.status != http.StatusNotFound {
		t.Fatalf("revoked link = %d, want 404", a.status)
	}

	locked := "/share/" + slugs["locked"]
	if a := visitor.get(locked); a.status != http.StatusUnauthorized || !strings.Contains(a.body, "Password required") {
		t.Fatalf("locked link without password = %d, want the password form", a.status)
	}
	for _, r := range append(dataRoutes, "/data/live?period=today") {
		if a := visitor.get(locked + r); a.status != http.StatusUnauthorized {
			t.Fatalf("locked link %s without password = %d, want 401", r, a.status)
		}
	}
	if a := visitor.post(locked, "password", "wrong"); a.status != http.StatusUnauthorized {
		t.Fatalf("wrong share password = %d, want 401", a.status)
	}
	if a := visitor.post(locked, "password", "share secret"); a.status != http.StatusSeeOther {
		t.Fatalf("right share password = %d", a.status)
	}
	if a := visitor.get(locked); a.status != http.StatusOK {
		t.Fatalf("locked link after the password = %d", a.status)
	}
	if a := visitor.get(locked + "/data/dashboard?period=today"); a.status != http.StatusOK {
		t.Fatalf("locked link data after the password = %d", a.status)
	}
	// A forged pass does not open the link.
	forger := e.browser(t)
	u, _ := url.Parse(e.origin + locked)
	forger.client.Jar.SetCookies(u, []*http.Cookie{{Name: fmt.Sprintf("haru_share_%d", ids["locked"]), Value: "AAAA"}})
	if a := forger.get(locked); a.status != http.StatusUnauthorized {
		t.Fatalf("forged pass = %d, want 401", a.status)
	}
	// Password attempts are limited per link.
	for i := 0; i < 8; i++ { // two attempts above
		forger.post(locked, "password", "guess")
	}
	if a := forger.post(locked, "password", "share secret"); a.status != http.StatusTooManyRequests {
		t.Fatalf("11th password attempt = %d, want 429", a.status)
	}
}

func TestAdminResetEndsSessions(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	adm, err := NewAdmin(e.db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if err := adm.ResetPassword(context.Background(), "ANN@example.com", "reset password 1"); err != nil {
		t.Fatal(err)
	}
	if a := b.get("/app"); a.status != http.StatusSeeOther {
		t.Fatalf("session after an admin reset = %d, want logged out", a.status)
	}
	if a := e.browser(t).post("/login", "email", "ann@example.com", "password", "reset password 1"); a.status != http.StatusSeeOther {
		t.Fatalf("login with the reset password = %d", a.status)
	}
}

// TestStaticFiles: versioned URLs are cached for good, compressed, and every asset a
// page links to exists.
func TestStaticFiles(t *testing.T) {
	e := newWebEnv(t, "")
	page := e.browser(t).get("/login")
	links := regexp.MustCompile(`/static/[a-z.]+\?v=[0-9a-f]+`).FindAllString(page.body, -1)
	if len(links) < 2 {
		t.Fatalf("login page links %v, want the stylesheet and the script", links)
	}
	for _, l := range append(links, "/static/uplot.min.js?v="+e.svc.web.assets["uplot.min.js"].Version) {
		req, _ := http.NewRequest(http.MethodGet, e.origin+l, nil)
		req.Header.Set("Accept-Encoding", "gzip")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" ||
			resp.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("GET %s = %d, Cache-Control %q, Content-Encoding %q", l, resp.StatusCode, resp.Header.Get("Cache-Control"), resp.Header.Get("Content-Encoding"))
		}
		if name := strings.TrimPrefix(strings.Split(l, "?")[0], "/static/"); len(body) >= len(e.svc.web.assets[name].Body) {
			t.Errorf("%s: %d bytes compressed vs %d", l, len(body), len(e.svc.web.assets[name].Body))
		}
	}
	if a := e.browser(t).get("/static/app.js"); a.header.Get("Cache-Control") != "no-cache" {
		t.Errorf("unversioned asset Cache-Control %q, want no-cache", a.header.Get("Cache-Control"))
	}
	if a := e.browser(t).get("/static/nope.js"); a.status != http.StatusNotFound {
		t.Errorf("missing asset = %d, want 404", a.status)
	}
}
