package tracker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/haru-analytics/haru/pkg/browsertest"
	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/ingest"
	"github.com/haru-analytics/haru/tracker"
)

// The browser tests load real pages in headless Chromium from a host name that is not
// local (mapped to 127.0.0.1 by the browser's resolver), and send their beacons to the
// real ingest service, whose published events are read back from JetStream.

const (
	shopHost  = "shop.example.test"
	otherHost = "other.example.test"
	// localSubHost is a subdomain of the shop whose name merely starts with "localhost".
	localSubHost = "localhost.shop.example.test"
	userAgent    = browsertest.UserAgent
)

// harness is one ingest service, one page server and one browser shared by the subtests.
type harness struct {
	ingestOrigin string // http://shop.example.test:PORT, serving /api/collect and /js/
	ingestAddr   string // 127.0.0.1:PORT, the same listener
	pageOrigin   string // http://shop.example.test:PORT, serving the test pages
	pagePort     string
	js           jetstream.JetStream
	names        event.Names
	sites        jetstream.KeyValue
	browser      context.Context
	siteSeq      atomic.Int64

	mu    sync.Mutex
	pages map[string]testPage // by the first path segment after /p/
}

type testPage struct {
	html string
	csp  string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	browsertest.Find(t) // skip early without a browser
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// Ingest against a private JetStream server.
	srv := natstest.New(t)
	nc := srv.Conn(t)
	cfg := ingest.Config{
		NATS:           natsutil.Config{URL: srv.URL, Prefix: event.DefaultPrefix, Stream: natsutil.DefaultStreamSettings()},
		ClientIPHeader: fiber.HeaderXForwardedFor,
		PublishTimeout: 5 * time.Second,
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	health := telemetry.NewHealth()
	ing, err := ingest.New(ctx, cfg, ingest.Deps{
		Log: log, Metrics: prometheus.NewRegistry(), Health: health, Clock: clock.System{}, NATS: nc,
	})
	if err != nil {
		t.Fatal(err)
	}
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		_ = ing.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-runDone })

	h := &harness{names: cfg.NATS.Names(), pages: map[string]testPage{}}
	if h.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	if h.sites, err = natsutil.EnsureSites(ctx, h.js, h.names, 1); err != nil {
		t.Fatal(err)
	}

	app := fiber.New(ingest.AppConfig(log))
	ing.Register(app)
	tracker.Register(app)
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = app.Listener(ln) }()
	t.Cleanup(func() { _ = app.ShutdownWithTimeout(5 * time.Second) })
	h.ingestAddr = ln.Addr().String()
	h.ingestOrigin = "http://" + shopHost + ":" + port(ln.Addr())

	pages := httptest.NewServer(http.HandlerFunc(h.servePage))
	t.Cleanup(pages.Close)
	h.pagePort = port(pages.Listener.Addr())
	h.pageOrigin = "http://" + shopHost + ":" + h.pagePort

	for deadline := time.Now().Add(10 * time.Second); health.Ready(ctx) != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("ingest not ready: %v", health.Ready(ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}

	h.browser = browsertest.Start(t, []string{shopHost, otherHost, localSubHost}, 1280, 800)
	return h
}

func port(a net.Addr) string {
	_, p, _ := net.SplitHostPort(a.String())
	return p
}

func (h *harness) servePage(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/static/queue.js":
		// The snippet that queues calls made before haru.js loads, as a file so that a
		// strict CSP allows it.
		w.Header().Set("Content-Type", "application/javascript")
		fmt.Fprint(w, `window.haru=window.haru||function(){(window.haru.q=window.haru.q||[]).push(arguments)};`+
			`haru('Queued',{props:{from:'queue'}});`)
		return
	case strings.HasPrefix(r.URL.Path, "/files/"):
		w.Header().Set("Content-Disposition", "attachment")
		fmt.Fprint(w, "file")
		return
	}
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/p/"), "/")
	h.mu.Lock()
	p, ok := h.pages[name]
	h.mu.Unlock()
	if !ok {
		http.Error(w, "landing page", http.StatusOK)
		return
	}
	if p.csp != "" {
		w.Header().Set("Content-Security-Policy", p.csp)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	fmt.Fprint(w, p.html)
}

// site is one site in the registry with its own token, so each subtest reads only its
// own events from the stream.
type site struct {
	id     int64
	token  string
	events chan event.Event
}

func (h *harness) newSite(t *testing.T) *site {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := &site{id: h.siteSeq.Add(1), events: make(chan event.Event, 100)}
	s.token = fmt.Sprintf("tok%dx%d", s.id, time.Now().UnixNano())
	b, err := event.EncodeSite(event.Site{ID: s.id, Token: s.token, Domain: shopHost, Timezone: "UTC", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.sites.Put(ctx, event.SiteKey(s.token), b); err != nil {
		t.Fatal(err)
	}
	cons, err := h.js.CreateConsumer(ctx, h.names.Stream, jetstream.ConsumerConfig{
		FilterSubject: h.names.EventSubject(s.id),
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		ev, err := event.Decode(m.Data())
		_ = m.Ack()
		if err != nil {
			// The test's next assertion reports it; the callback may outlive the test.
			ev.Name = "undecodable event: " + err.Error()
		}
		select {
		case s.events <- ev:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
	// Wait until ingest's registry knows the token: an empty body is then refused as
	// bad input (400), no longer as an unknown token (401).
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.ingestAddr+"/api/collect?t="+s.token, strings.NewReader(""))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusServiceUnavailable {
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("ingest never learned the new site: status %d", resp.StatusCode)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// next returns the site's next event, failing after timeout.
func (s *site) next(t *testing.T, timeout time.Duration) event.Event {
	t.Helper()
	select {
	case ev := <-s.events:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return event.Event{}
	}
}

// nextNamed skips events of other names (engagement reports, say) until one named name.
func (s *site) nextNamed(t *testing.T, name string, timeout time.Duration) event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ev := s.next(t, time.Until(deadline))
		if ev.Name == name {
			return ev
		}
	}
}

// byName takes the site's next n events, which must have distinct names. Beacons sent
// back to back travel separately and may arrive in either order.
func (s *site) byName(t *testing.T, n int, timeout time.Duration) map[string]event.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	got := map[string]event.Event{}
	for i := 0; i < n; i++ {
		ev := s.next(t, time.Until(deadline))
		if _, dup := got[ev.Name]; dup {
			t.Fatalf("two %q events", ev.Name)
		}
		got[ev.Name] = ev
	}
	return got
}

// none fails if the site receives any event within wait.
func (s *site) none(t *testing.T, wait time.Duration) {
	t.Helper()
	select {
	case ev := <-s.events:
		t.Fatalf("unexpected event %q on %q", ev.Name, ev.Path)
	case <-time.After(wait):
	}
}

// addPage serves html (with {{api}}, {{token}} and {{pages}} filled in) under /p/name/.
func (h *harness) addPage(name string, s *site, html, csp string) string {
	r := strings.NewReplacer("{{api}}", h.ingestOrigin, "{{token}}", s.token, "{{other}}", "http://"+otherHost+":"+h.pagePort)
	h.mu.Lock()
	h.pages[name] = testPage{html: r.Replace(html), csp: r.Replace(csp)}
	h.mu.Unlock()
	return h.pageOrigin + "/p/" + name + "/"
}

// tab opens a browser tab closed at the end of the test, saving a screenshot to
// $HARU_ARTIFACTS (or the temporary directory) if the test failed.
func (h *harness) tab(t *testing.T) context.Context {
	t.Helper()
	tabCtx, cancel := chromedp.NewContext(h.browser)
	if err := chromedp.Do(tabCtx); err != nil {
		cancel()
		t.Fatalf("open tab: %v", err)
	}
	ctx, timeout := context.WithTimeout(tabCtx, 20*time.Second)
	t.Cleanup(func() {
		if t.Failed() {
			if png, err := chromedp.Run(ctx, chromedp.FullScreenshot(80)); err == nil {
				name := "tracker-" + strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".png"
				if p := browsertest.Artifact(t, name, png); p != "" {
					t.Logf("screenshot: %s", p)
				}
			}
		}
		timeout()
		cancel()
	})
	return ctx
}

func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func eval(js string) chromedp.Action[chromedp.Void] { return chromedp.Evaluate[chromedp.Void](js) }

// addScript runs js in the tab before any page script, on every page it loads.
func addScript(t *testing.T, ctx context.Context, js string) page.ScriptIdentifier {
	t.Helper()
	res, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: js})
	if err != nil {
		t.Fatal(err)
	}
	return res.Identifier
}

// script is the embed tag the README gives, with data attributes added.
func script(variant, attrs string) string {
	return `<script defer src="{{api}}/js/` + variant + `.js" data-token="{{token}}" ` + attrs + `></script>`
}

const waitEvent = 5 * time.Second

func TestBrowser(t *testing.T) {
	h := newHarness(t)

	t.Run("pageview", func(t *testing.T) {
		s := h.newSite(t)
		// data-api is left out: the script's own origin is the default.
		url := h.addPage("pageview", s, `<!doctype html><title>home</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		// Page.navigate with a referrer, as if the visitor came from a link elsewhere.
		if _, err := chromedp.Call(ctx, page.Navigate, page.NavigateParams{URL: url + "?utm_source=news", Referrer: "http://news.example.org/item/1"}); err != nil {
			t.Fatal(err)
		}
		ev := s.next(t, waitEvent)
		if ev.Name != "pageview" || ev.Path != "/p/pageview/" || ev.SiteID != s.id {
			t.Fatalf("got %q %q site %d, want pageview /p/pageview/ site %d", ev.Name, ev.Path, ev.SiteID, s.id)
		}
		// The browser's default referrer policy trims a cross-origin referrer to its origin.
		if !strings.HasPrefix(ev.Referrer, "http://news.example.org/") {
			t.Errorf("referrer %q", ev.Referrer)
		}
		screen, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`[screen.width, screen.height]`))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(screen, []int{ev.ScreenW, ev.ScreenH}); diff != "" || ev.ScreenW == 0 {
			t.Errorf("screen size (-browser +event):\n%s", diff)
		}
		if ev.Visitor == 0 {
			t.Error("no visitor id")
		}
		if webdriver, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`navigator.webdriver`)); err != nil || webdriver {
			t.Fatal("navigator.webdriver is true: the browser flags leave automation markers on")
		}
	})

	t.Run("spa", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("spa", s, `<!doctype html><title>spa</title>`+script("haru", `data-api="{{api}}"`), "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		var got []string
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		run(t, ctx, eval(`history.pushState({}, '', '/p/spa/about')`))
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		// The same path again, or only a new query, is not a new pageview.
		run(t, ctx, eval(`history.pushState({}, '', '/p/spa/about'); history.replaceState({}, '', '/p/spa/about?tab=2')`))
		// Two steps back is the first page again: a new pageview.
		run(t, ctx, eval(`history.go(-2)`))
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		run(t, ctx, eval(`history.pushState({}, '', '/p/spa/pricing')`))
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		// Had the repeated path counted, /p/spa/about would appear twice.
		want := []string{"/p/spa/", "/p/spa/about", "/p/spa/", "/p/spa/pricing"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("pageviews (-want +got):\n%s", diff)
		}
	})

	t.Run("hash", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("hash", s, `<!doctype html><title>hash</title>`+script("haru", `data-hash`), "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url+"#/inbox"))
		var got []string
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		run(t, ctx, eval(`location.hash = '#/settings'`))
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		run(t, ctx, eval(`location.hash = '#/settings'; location.hash = '#/inbox'`))
		got = append(got, s.nextNamed(t, "pageview", waitEvent).Path)
		want := []string{"/p/hash/#/inbox", "/p/hash/#/settings", "/p/hash/#/inbox"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("pageviews (-want +got):\n%s", diff)
		}
	})

	t.Run("custom events", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("custom", s, `<!doctype html><title>custom</title>
<script src="/static/queue.js"></script>`+script("haru", "")+`
<button id="cta" data-haru-event="CTA" data-haru-prop-place="hero"><span id="inner">Buy</span></button>`, "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		// The call queued before haru.js loaded is sent right after the pageview.
		first := s.byName(t, 2, waitEvent)
		if _, ok := first["pageview"]; !ok {
			t.Fatalf("no pageview among %v", first)
		}
		type custom struct {
			Name  string
			Path  string
			Props map[string]string
		}
		ev := first["Queued"]
		if diff := cmp.Diff(custom{"Queued", "/p/custom/", map[string]string{"from": "queue"}}, custom{ev.Name, ev.Path, ev.Props}); diff != "" {
			t.Fatalf("queued event (-want +got):\n%s", diff)
		}
		run(t, ctx, eval(`haru('Signup', {props: {plan: 'pro', seats: 3}})`))
		ev = s.nextNamed(t, "Signup", waitEvent)
		if diff := cmp.Diff(custom{"Signup", "/p/custom/", map[string]string{"plan": "pro", "seats": "3"}}, custom{ev.Name, ev.Path, ev.Props}); diff != "" {
			t.Fatalf("custom event (-want +got):\n%s", diff)
		}
		// A click inside a tagged element counts as the element's event.
		run(t, ctx, chromedp.Click(chromedp.ID("inner")))
		ev = s.nextNamed(t, "CTA", waitEvent)
		if diff := cmp.Diff(custom{"CTA", "/p/custom/", map[string]string{"place": "hero"}}, custom{ev.Name, ev.Path, ev.Props}); diff != "" {
			t.Fatalf("tagged click (-want +got):\n%s", diff)
		}
	})

	t.Run("links", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("links", s, `<!doctype html><title>links</title>`+script("haru.links", `data-outbound data-downloads`)+`
<a id="local" href="/p/links/next">next</a>
<a id="dl" href="/files/report.pdf" download>report</a>
<a id="out" href="{{other}}/landing?x=1">elsewhere</a>`, "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		run(t, ctx, chromedp.Click(chromedp.ID("dl")))
		ev := s.nextNamed(t, "File Download", waitEvent)
		if diff := cmp.Diff(map[string]string{"url": h.pageOrigin + "/files/report.pdf"}, ev.Props); diff != "" {
			t.Fatalf("download props (-want +got):\n%s", diff)
		}
		// The click navigates away; the beacon still arrives.
		run(t, ctx, chromedp.Click(chromedp.ID("out")))
		ev = s.nextNamed(t, "Outbound Link: Click", waitEvent)
		if diff := cmp.Diff(map[string]string{"url": "http://" + otherHost + ":" + h.pagePort + "/landing?x=1"}, ev.Props); diff != "" {
			t.Fatalf("outbound props (-want +got):\n%s", diff)
		}
	})

	t.Run("engagement", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("engagement", s, `<!doctype html><title>engagement</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		// Visibility is emulated: the page sees document.visibilityState change and a
		// visibilitychange event, as when the visitor switches tabs.
		setVisibility := func(state string) chromedp.Action[chromedp.Void] {
			return eval(`Object.defineProperty(document, 'visibilityState', {value: '` + state + `', configurable: true});` +
				`Object.defineProperty(document, 'hidden', {value: document.visibilityState == 'hidden', configurable: true});` +
				`document.dispatchEvent(new Event('visibilitychange'))`)
		}
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		// The first stretch is long and the later ones short, so a report that repeated
		// earlier time would stand out even on a slow machine.
		const firstStretch = 1500
		time.Sleep(firstStretch * time.Millisecond)
		run(t, ctx, setVisibility("hidden"))
		first := s.next(t, waitEvent)
		if first.Name != "engagement" || first.Path != "/p/engagement/" || first.DurationMS < firstStretch || first.DurationMS > 10000 {
			t.Fatalf("first report: %q %q %dms, want engagement /p/engagement/ of at least %dms", first.Name, first.Path, first.DurationMS, firstStretch)
		}
		// Hidden time does not count, and a hidden page leaving sends nothing more.
		time.Sleep(300 * time.Millisecond)
		run(t, ctx, setVisibility("visible"))
		time.Sleep(300 * time.Millisecond)
		run(t, ctx, setVisibility("hidden"), eval(`dispatchEvent(new Event('pagehide'))`))
		second := s.next(t, waitEvent)
		if second.Name != "engagement" || second.DurationMS < 300 || second.DurationMS >= firstStretch {
			t.Fatalf("second report: %q %dms, want engagement of about 300ms (only the time since the first)", second.Name, second.DurationMS)
		}
		s.none(t, 300*time.Millisecond)
		// Back in view, then an SPA navigation reports the time on the old page.
		run(t, ctx, setVisibility("visible"))
		time.Sleep(200 * time.Millisecond)
		run(t, ctx, eval(`history.pushState({}, '', '/p/engagement/next')`))
		last := s.byName(t, 2, waitEvent)
		if third := last["engagement"]; third.Path != "/p/engagement/" || third.DurationMS < 200 || third.DurationMS >= firstStretch {
			t.Fatalf("report on navigation: %q %q %dms, want engagement /p/engagement/ about 200ms", third.Name, third.Path, third.DurationMS)
		}
		if ev := last["pageview"]; ev.Path != "/p/engagement/next" {
			t.Fatalf("pageview on %q, want /p/engagement/next", ev.Path)
		}
	})

	t.Run("back-forward cache", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("bfcache", s, `<!doctype html><title>bfcache</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		// The events a browser fires when the visitor leaves and comes back with Back.
		run(t, ctx, eval(`dispatchEvent(new PageTransitionEvent('pagehide', {persisted: true}));`+
			`dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))`))
		if ev := s.nextNamed(t, "pageview", waitEvent); ev.Path != "/p/bfcache/" {
			t.Fatalf("pageview on %q after the restore", ev.Path)
		}
	})

	// Ingest refuses a path over 2,048 bytes, a URL or referrer over 4,096 and a property
	// value over 256: the tracker cuts them, else every event of the page would be lost.
	// A URL is ASCII once the browser has serialized it, so the cuts are in bytes.
	longURLs := []struct {
		name     string
		suffix   string // added to the page's URL
		wantPath string
		wantUTM  string
	}{
		{name: "long query", suffix: "?utm_source=ads&state=" + strings.Repeat("x", 4100), wantPath: "/p/longurl/", wantUTM: "ads"},
		{name: "long path", suffix: strings.Repeat("é", 1000), wantPath: ("/p/longurl/" + strings.Repeat("%C3%A9", 1000))[:2048]},
	}
	for _, tt := range longURLs {
		t.Run("cuts a "+tt.name, func(t *testing.T) {
			s := h.newSite(t)
			url := h.addPage("longurl", s, `<!doctype html><title>long</title>`+script("haru", ""), "")
			ctx := h.tab(t)
			run(t, ctx, chromedp.Navigate(url+tt.suffix))
			ev := s.next(t, waitEvent)
			if ev.Name != "pageview" || ev.Path != tt.wantPath || ev.UTMSource != tt.wantUTM {
				t.Fatalf("got %q on %q (%d bytes), utm_source %q; want the pageview on %q, utm_source %q",
					ev.Name, ev.Path, len(ev.Path), ev.UTMSource, tt.wantPath, tt.wantUTM)
			}
		})
	}

	t.Run("cuts a long referrer", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("longref", s, `<!doctype html><title>long referrer</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		// Emulated: Chromium itself strips a referrer over 4,096 bytes to its origin, other
		// browsers need not.
		ref := "http://news.example.org/item?q=" + strings.Repeat("r", 5000)
		addScript(t, ctx, `Object.defineProperty(document, 'referrer', {get: () => '`+ref+`'})`)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" || ev.Referrer != ref[:4096] {
			t.Fatalf("got %q with a referrer of %d bytes, want the pageview with the first 4096 bytes of the referrer", ev.Name, len(ev.Referrer))
		}
	})

	t.Run("cuts a long link url", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("longlink", s, `<!doctype html><title>long links</title>`+script("haru.links", `data-outbound`)+`
<a id="query" href="{{other}}/landing?ref=`+strings.Repeat("a", 300)+`#top" onclick="event.preventDefault()">query</a>
<a id="path" href="{{other}}/`+strings.Repeat("b", 300)+`" onclick="event.preventDefault()">path</a>`, "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		other := "http://" + otherHost + ":" + h.pagePort
		var got []string
		for _, id := range []string{"query", "path"} {
			run(t, ctx, chromedp.Click(chromedp.ID(id)))
			got = append(got, s.nextNamed(t, "Outbound Link: Click", waitEvent).Props["url"])
		}
		// Without its query and fragment; then cut.
		want := []string{other + "/landing", (other + "/" + strings.Repeat("b", 300))[:256]}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("props.url (-want +got):\n%s", diff)
		}
	})

	t.Run("caps engagement at a day", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("longday", s, `<!doctype html><title>a day</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		// The tab stays in view for 25 hours; ingest refuses a report over 24.
		run(t, ctx, eval(`const now = Date.now; Date.now = () => now() + 25 * 3600e3;`+
			`Object.defineProperty(document, 'hidden', {value: true, configurable: true});`+
			`document.dispatchEvent(new Event('visibilitychange'))`))
		if ev := s.next(t, waitEvent); ev.Name != "engagement" || ev.DurationMS != 24*3600*1000 {
			t.Fatalf("got %q of %dms, want engagement of 24h", ev.Name, ev.DurationMS)
		}
	})

	t.Run("custom events wait for a prerendered page to be shown", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("prerender", s, `<!doctype html><title>prerender</title>`+script("haru", "")+
			`<script>document.addEventListener('DOMContentLoaded', () => haru('Early', {props: {at: 'load'}}))</script>`, "")
		ctx := h.tab(t)
		// Prerendering is emulated: document.prerendering holds until prerenderingchange.
		addScript(t, ctx, `window.prerendering = true;`+
			`Object.defineProperty(document, 'prerendering', {get: () => window.prerendering, configurable: true})`)
		run(t, ctx, chromedp.Navigate(url), chromedp.WaitReady("body"))
		s.none(t, time.Second)
		run(t, ctx, eval(`window.prerendering = false; document.dispatchEvent(new Event('prerenderingchange'))`))
		got := s.byName(t, 2, waitEvent)
		if ev, ok := got["Early"]; !ok || ev.Path != "/p/prerender/" || ev.Props["at"] != "load" {
			t.Fatalf("after the page was shown: %v, want the pageview and Early", got)
		}
	})

	t.Run("a second copy counts nothing", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("twice", s, `<!doctype html><title>twice</title>`+script("haru", "")+script("haru.links", `data-outbound`)+`
<button id="cta" data-haru-event="CTA">Buy</button>`, "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(url), chromedp.WaitReady("body"))
		run(t, ctx, chromedp.Click(chromedp.ID("cta")), eval(`haru('Signup')`))
		got := s.byName(t, 3, waitEvent)
		if _, ok := got["pageview"]; !ok {
			t.Fatalf("events %v, want a pageview", got)
		}
		s.none(t, 500*time.Millisecond)
	})

	t.Run("a host that only starts with localhost counts", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("localsub", s, `<!doctype html><title>localhost subdomain</title>`+script("haru", ""), "")
		ctx := h.tab(t)
		run(t, ctx, chromedp.Navigate(strings.Replace(url, shopHost, localSubHost, 1)))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" || ev.Hostname != localSubHost {
			t.Fatalf("got %q on host %q, want the pageview on %s", ev.Name, ev.Hostname, localSubHost)
		}
	})

	// Ingest answers 503 when it cannot make an event durable (as during a NATS election)
	// and 429 past a rate limit; the tracker retries those and network errors three
	// times, after 1, 2 and 4 s. The answers come from a stand-in for ingest. Timers are
	// emulated (run at once, their delays recorded) except in the first case.
	retries := []struct {
		name       string
		answers    []int // by request, the last repeating; 0 drops the connection
		realTimers bool
		want       int // requests
		wantDelays []int
	}{
		{name: "503 then accepted", answers: []int{503, 202}, realTimers: true, want: 2},
		{name: "429 then accepted", answers: []int{429, 202}, want: 2, wantDelays: []int{1000}},
		{name: "network error then accepted", answers: []int{0, 202}, want: 2, wantDelays: []int{1000}},
		{name: "always 503", answers: []int{503}, want: 4, wantDelays: []int{1000, 2000, 4000}},
		{name: "400 is final", answers: []int{400}, want: 1},
	}
	for _, tt := range retries {
		t.Run("retry "+tt.name, func(t *testing.T) {
			s := h.newSite(t)
			api := newFakeAPI(t, tt.answers)
			url := h.addPage("retry", s, `<!doctype html><title>retry</title>`+script("haru", `data-api="`+api.origin+`"`), "")
			ctx := h.tab(t)
			if !tt.realTimers {
				addScript(t, ctx, `window.delays = []; const later = setTimeout;`+
					`window.setTimeout = (f, ms, ...args) => (delays.push(ms), later(f, 0, ...args))`)
			}
			run(t, ctx, chromedp.Navigate(url))
			bodies := api.wait(t, tt.want, waitEvent)
			time.Sleep(500 * time.Millisecond)
			if n := api.count(); n != tt.want {
				t.Fatalf("%d requests, want %d", n, tt.want)
			}
			// The same body, send id i included: ingest stores a retry of an event it
			// stored already (its answer lost) as the same event, once.
			for _, b := range bodies[1:] {
				if b != bodies[0] {
					t.Fatalf("a retry sent %s, the first request %s", b, bodies[0])
				}
			}
			var sent struct{ I int64 }
			if err := json.Unmarshal([]byte(bodies[0]), &sent); err != nil || sent.I < 1e12 {
				t.Fatalf("the beacon %s: send id %d (%v), want the time it was first sent, in ms", bodies[0], sent.I, err)
			}
			if !tt.realTimers {
				delays, err := chromedp.Run(ctx, chromedp.Evaluate[[]int](`window.delays`))
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tt.wantDelays, delays, cmpopts.EquateEmpty()); diff != "" {
					t.Fatalf("retry delays in ms (-want +got):\n%s", diff)
				}
			}
		})
	}

	// Ingest takes only pages with an http(s) URL: the tracker stays off elsewhere (a
	// data: page cannot load it here, Chromium keeps it from loopback addresses). Each
	// case is followed by a normal page sending to the same stand-in for ingest: its
	// pageview must be the first request.
	notHTTP := []struct {
		name string
		open func(api string) string // the URL to open
	}{
		{name: "a srcdoc frame", open: func(api string) string {
			inner := `<script src="` + h.ingestOrigin + `/js/haru.js" data-api="` + api + `" data-token="x"></script><script>haru('Signup')</script>`
			return h.addPage("srcdoc", &site{}, `<!doctype html><title>srcdoc</title><iframe srcdoc="`+html.EscapeString(inner)+`"></iframe>`, "")
		}},
		{name: "an about:blank frame", open: func(api string) string {
			return h.addPage("blank", &site{}, `<!doctype html><title>about:blank</title><iframe id="f"></iframe><script>`+
				`const d = f.contentDocument, s = d.createElement('script');`+
				`s.src = '`+h.ingestOrigin+`/js/haru.js'; s.dataset.api = '`+api+`'; s.dataset.token = 'x'; d.body.appendChild(s)</script>`, "")
		}},
	}
	for _, tt := range notHTTP {
		t.Run("off in "+tt.name, func(t *testing.T) {
			api := newFakeAPI(t, []int{202})
			control := h.addPage("control", &site{}, `<!doctype html><title>control</title>`+script("haru", `data-api="`+api.origin+`"`), "")
			ctx := h.tab(t)
			run(t, ctx, chromedp.Navigate(tt.open(api.origin)), chromedp.Sleep(500*time.Millisecond))
			// The frame did load the tracker.
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`typeof frames[0].haru == 'function'`)); err != nil || !ok {
				t.Fatalf("no haru in the frame: %v %v", ok, err)
			}
			run(t, ctx, chromedp.Navigate(control))
			bodies := api.wait(t, 1, waitEvent)
			var first struct{ N, U string }
			if err := json.Unmarshal([]byte(bodies[0]), &first); err != nil || first.N != "pageview" || first.U != control {
				t.Fatalf("first request %s (%v), want the control page's pageview", bodies[0], err)
			}
		})
	}

	t.Run("csp", func(t *testing.T) {
		s := h.newSite(t)
		url := h.addPage("csp", s, `<!doctype html><title>csp</title>`+script("haru", "")+`
<button id="cta" data-haru-event="CTA">Buy</button>`, "script-src 'self' {{api}}; connect-src *")
		ctx := h.tab(t)
		// Injected through DevTools, which CSP does not govern, to record violations.
		addScript(t, ctx, `window.violations = [];`+
			`document.addEventListener('securitypolicyviolation', e => window.violations.push(e.violatedDirective + ' ' + e.blockedURI))`)
		run(t, ctx, chromedp.Navigate(url))
		if ev := s.next(t, waitEvent); ev.Name != "pageview" {
			t.Fatalf("first event %q, want pageview", ev.Name)
		}
		run(t, ctx, chromedp.Click(chromedp.ID("cta")))
		if ev := s.nextNamed(t, "CTA", waitEvent); ev.Path != "/p/csp/" {
			t.Fatalf("tagged click on %q", ev.Path)
		}
		violations, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](`window.violations`))
		if err != nil {
			t.Fatal(err)
		}
		if len(violations) != 0 {
			t.Fatalf("CSP violations: %v", violations)
		}
	})

	// Visitors who opted out, automated browsers and local pages send nothing. Each
	// case then loads a normal page in the same tab: once its pageview arrives, anything
	// the silent page had sent would have arrived before it.
	silent := []struct {
		name   string
		setup  string // run before the page's scripts
		check  string // true on the silent page when the setup took effect
		origin func() string
		attrs  string
	}{
		{name: "opt-out", setup: `localStorage.setItem('haru_ignore', 'true')`, check: `localStorage.haru_ignore === 'true'`},
		{name: "webdriver", setup: `Object.defineProperty(navigator, 'webdriver', {get: () => true})`, check: `navigator.webdriver === true`},
		{name: "localhost", origin: func() string { return "http://127.0.0.1:" + h.pagePort }, check: `location.hostname === '127.0.0.1'`},
		{name: "dnt", setup: `Object.defineProperty(navigator, 'globalPrivacyControl', {get: () => true})`, attrs: `data-respect-dnt`, check: `navigator.globalPrivacyControl === true`},
	}
	for _, tt := range silent {
		t.Run("silent "+tt.name, func(t *testing.T) {
			s := h.newSite(t)
			name := "silent-" + tt.name
			url := h.addPage(name, s, `<!doctype html><title>silent</title>`+script("haru", tt.attrs)+
				`<button id="cta" data-haru-event="CTA">Buy</button>`, "")
			if tt.origin != nil {
				url = strings.Replace(url, h.pageOrigin, tt.origin(), 1)
			}
			ctx := h.tab(t)
			var id page.ScriptIdentifier
			if tt.setup != "" {
				id = addScript(t, ctx, tt.setup)
			}
			run(t, ctx, chromedp.Navigate(url), eval(`haru('Signup')`), chromedp.Click(chromedp.ID("cta")),
				eval(`history.pushState({}, '', 'elsewhere')`))
			if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](tt.check)); err != nil || !ok {
				t.Fatalf("%s: %v, %v", tt.check, ok, err)
			}
			if tt.setup != "" {
				if _, err := chromedp.Call(ctx, page.RemoveScriptToEvaluateOnNewDocument, page.RemoveScriptToEvaluateOnNewDocumentParams{Identifier: id}); err != nil {
					t.Fatal(err)
				}
				run(t, ctx, eval(`localStorage.removeItem('haru_ignore')`))
			}
			run(t, ctx, chromedp.Navigate(h.pageOrigin+"/p/"+name+"/sentinel"))
			if ev := s.next(t, waitEvent); ev.Name != "pageview" || ev.Path != "/p/"+name+"/sentinel" {
				t.Fatalf("got %q on %q before the control page's pageview", ev.Name, ev.Path)
			}
		})
	}
}

// fakeAPI stands in for ingest's collect endpoint, answering each request with the next
// of its answers (the last repeating; 0 drops the connection) and keeping the bodies.
type fakeAPI struct {
	origin  string
	answers []int

	mu     sync.Mutex
	bodies []string
}

func newFakeAPI(t *testing.T, answers []int) *fakeAPI {
	t.Helper()
	a := &fakeAPI{answers: answers}
	srv := httptest.NewServer(http.HandlerFunc(a.serve))
	t.Cleanup(srv.Close)
	a.origin = "http://" + otherHost + ":" + port(srv.Listener.Addr())
	return a
}

func (a *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Access-Control-Allow-Origin", "*")
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Headers", "*")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	body, _ := io.ReadAll(r.Body)
	a.mu.Lock()
	a.bodies = append(a.bodies, string(body))
	status := a.answers[min(len(a.bodies), len(a.answers))-1]
	a.mu.Unlock()
	if status == 0 {
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("Retry-After", "1")
	w.WriteHeader(status)
}

func (a *fakeAPI) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.bodies)
}

// wait returns the bodies once n requests have come, failing after timeout.
func (a *fakeAPI) wait(t *testing.T, n int, timeout time.Duration) []string {
	t.Helper()
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		a.mu.Lock()
		bodies := append([]string(nil), a.bodies...)
		a.mu.Unlock()
		if len(bodies) >= n {
			return bodies
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests within %s, want %d", len(bodies), timeout, n)
		}
	}
}
