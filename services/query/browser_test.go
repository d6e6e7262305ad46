package query_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/haru-analytics/haru/pkg/browsertest"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/services/all"
	"github.com/haru-analytics/haru/services/query/internal/live"
)

// The dashboard test runs the whole system in-process (`haru -target=all`) and drives it
// in headless Chromium as a person would: register, add a site, paste its snippet into a
// page of the site, watch the dashboard change live, filter, share. The dashboard and the
// tracked site have non-local host names, mapped to 127.0.0.1 by the browser, because
// ingest ignores pages on local hosts.

const (
	haruHost  = "haru.example.test"
	shopHost  = "shop.example.test"
	userAgent = browsertest.UserAgent
)

// startHaru runs the single binary in-process and returns its port.
func startHaru(t *testing.T) string {
	t.Helper()
	db := pgtest.New(t)
	httpAddr, opsAddr := freeAddr(t), freeAddr(t)
	env := map[string]string{
		"HARU_DATABASE_URL":  db.URL,
		"HARU_HTTP_ADDR":     httpAddr,
		"HARU_OPS_ADDR":      opsAddr,
		"HARU_DATA_DIR":      t.TempDir(),
		"HARU_BATCH_AGE":     "20ms",
		"HARU_LOG_LEVEL":     "warn",
		"HARU_SSE_HEARTBEAT": "1s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- all.Main(ctx, nil, func(k string) string { return env[k] }, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("haru did not stop within 20s")
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case err := <-done:
			t.Fatalf("haru exited before ready: %v", err)
		default:
		}
		if resp, err := http.Get("http://" + opsAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("haru not ready within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, port, _ := net.SplitHostPort(httpAddr)
	return port
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if p := browsertest.Artifact(t, "dashboard-"+name+".png", png); p != "" {
		t.Logf("screenshot: %s", p)
	}
}

func do(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(sctx, steps...); err != nil {
		shot(t, ctx, "failed")
		t.Fatalf("%s: %v", what, err)
	}
}

// until waits for a JavaScript condition in the page.
func until(t *testing.T, ctx context.Context, what, cond string, timeout time.Duration) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	deadline := time.Now().Add(timeout)
	var err error
	for {
		_, err = chromedp.Run(pctx, chromedp.Poll[bool](cond, chromedp.WithPollingTimeout(time.Until(deadline)), chromedp.WithPollingInterval(50*time.Millisecond)))
		// A navigation under way restarts the poll in the new document: the old document's
		// execution context is gone ("navigated or closed", or "Cannot find context").
		if err == nil || !navigatedAway(err) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		if state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + ' | ' + document.body.innerText.slice(0, 600)`)); err == nil {
			t.Logf("page: %s", state)
		}
		shot(t, ctx, "failed")
		t.Fatalf("%s: %v", what, err)
	}
}

// navigatedAway reports whether err says the page's document went away under a call.
func navigatedAway(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "navigated or closed") || strings.Contains(msg, "Cannot find context with specified id")
}

// newTab opens a tab (in parent's browser context unless opts give another) and logs
// its console, which also keeps its page's runtime attached while other tabs work.
func newTab(t *testing.T, parent context.Context, opts ...chromedp.ContextOption) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(parent, opts...)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	go func() {
		for m, err := range chromedp.Console(ctx) {
			if err != nil {
				return
			}
			t.Logf("console: %+v", m)
		}
	}()
	return ctx
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("eval %s: %v", js, err)
	}
	return v
}

// registerWithSite registers email in the browser and adds the site Shop on shopHost; the
// tab is left on the site's settings page.
func registerWithSite(t *testing.T, ctx context.Context, haru, email string) {
	t.Helper()
	do(t, ctx, "open the register page", chromedp.Navigate(haru+"/register"))
	do(t, ctx, "register",
		chromedp.SendKeys(chromedp.CSS(`input[name=email]`), email),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`input[name=domain]`)),
	)
	do(t, ctx, "add a site",
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "Shop"),
		chromedp.SendKeys(chromedp.CSS(`input[name=domain]`), shopHost),
		chromedp.SetValue(chromedp.CSS(`input[name=timezone]`), "UTC"),
		chromedp.Click(chromedp.CSS(`form[action="/app/sites"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.ID("snippet")),
	)
}

func TestDashboardInBrowser(t *testing.T) {
	browsertest.Find(t) // skip early without a browser
	port := startHaru(t)
	haru := "http://" + haruHost + ":" + port

	// The tracked site: its pages carry the snippet the settings page shows.
	var snippet string
	shop := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		// The page also sends a custom event with a property, queued before haru.js loads.
		fmt.Fprintf(w, "<!doctype html><html><head><title>Shop %s</title><script>%s</script>%s</head><body><h1>%s</h1></body></html>",
			r.URL.Path, `window.haru=window.haru||function(){(window.haru.q=window.haru.q||[]).push(arguments)};haru('Signup',{props:{plan:'pro'}})`,
			snippet, r.URL.Path)
	}))
	t.Cleanup(shop.Close)
	_, shopPort, _ := net.SplitHostPort(shop.Listener.Addr().String())

	browser := browsertest.Start(t, []string{haruHost, shopHost}, 1280, 900)
	ctx, cancel := context.WithTimeout(browser, 90*time.Second)
	defer cancel()

	// Register and add a site.
	registerWithSite(t, ctx, haru, "Owner@Example.com")
	until(t, ctx, "the waiting state", `document.querySelector('#site-status').classList.contains('waiting')`, 5*time.Second)
	settingsURL := eval[string](t, ctx, `location.href`)
	snippet = eval[string](t, ctx, `document.querySelector('#snippet').textContent`)
	if want := `<script defer src="` + haru + `/js/haru.js" data-api="` + haru + `" data-token="`; !strings.HasPrefix(snippet, want) {
		t.Fatalf("snippet %q, want it to start with %q", snippet, want)
	}
	shot(t, ctx, "settings-waiting")
	do(t, ctx, "copy the snippet", chromedp.Click(chromedp.CSS(`button.copy[data-copy="#snippet"]`)))
	until(t, ctx, "the copied mark", `document.querySelector('button.copy[data-copy="#snippet"]').textContent === 'Copied'`, 3*time.Second)

	// The dashboard in a second tab, showing no visitor yet.
	dash := newTab(t, ctx)
	dashURL := strings.TrimSuffix(settingsURL, "/settings") + "?period=today"
	do(t, dash, "open the dashboard", chromedp.Navigate(dashURL))
	visitors := `document.querySelector('.figure[data-metric=visitors] .value').textContent`
	until(t, dash, "the first figures", visitors+` === '0'`, 10*time.Second)
	until(t, dash, "the live stream", `document.querySelector('#live-state').classList.contains('live')`, 10*time.Second)
	t.Logf("dashboard first contentful paint %.0f ms, dashboard JSON received at %.0f ms (-1: not recorded)",
		eval[float64](t, dash, `(performance.getEntriesByName('first-contentful-paint')[0] || {startTime: -1}).startTime`),
		eval[float64](t, dash, `(performance.getEntriesByType('resource').filter(e => e.name.includes('/data/dashboard'))[0] || {responseEnd: -1}).responseEnd`))
	eval[bool](t, dash, `window.notReloaded = true`)
	shot(t, dash, "empty")

	// A visitor opens a page of the shop, which sends its pageview to ingest.
	visit := newTab(t, ctx)
	do(t, visit, "visit the shop", chromedp.Navigate("http://"+shopHost+":"+shopPort+"/pricing"))

	// The settings page turns to "receiving" and the dashboard counts the visitor, both
	// live: the dashboard page is the same document, not reloaded.
	until(t, ctx, "receiving data", `document.querySelector('#site-status').classList.contains('receiving')`, 10*time.Second)
	shot(t, ctx, "settings-receiving")
	until(t, dash, "the live figure", visitors+` === '1'`, 10*time.Second)
	if !eval[bool](t, dash, `window.notReloaded === true`) {
		t.Fatal("the dashboard reloaded instead of updating live")
	}
	until(t, dash, "the page row", `[...document.querySelectorAll('[data-panel=pages] .label')].some(b => b.textContent === '/pricing')`, 5*time.Second)
	shot(t, dash, "live")
	do(t, dash, "entry pages", chromedp.Click(chromedp.CSS(`[data-panel=pages] button[data-dim=entry_page]`)))
	until(t, dash, "the entry page's visits", `[...document.querySelectorAll('[data-panel=pages] .row')].some(r =>
		r.querySelector('.label').textContent === '/pricing' && r.querySelector('.num').textContent === '1')`, 5*time.Second)
	do(t, dash, "top pages", chromedp.Click(chromedp.CSS(`[data-panel=pages] button[data-dim=page]`)))

	// Custom events, their properties, and a property's values, which filter too.
	until(t, dash, "the custom event", `[...document.querySelectorAll('[data-panel=events] .label')].some(b => b.textContent === 'Signup')`, 10*time.Second)
	do(t, dash, "properties", chromedp.Click(chromedp.CSS(`[data-panel=events] button[data-dim=props]`)))
	until(t, dash, "the property key", `[...document.querySelectorAll('[data-panel=events] .label')].some(b => b.textContent === 'plan')`, 5*time.Second)
	do(t, dash, "the property's values", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll('[data-panel=events] .label')].find(b => b.textContent === 'plan').click()`))
	until(t, dash, "the value pro", `[...document.querySelectorAll('[data-panel=events] .label')].some(b => b.textContent === 'pro')`, 5*time.Second)
	shot(t, dash, "properties")
	do(t, dash, "filter by the property", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll('[data-panel=events] .label')].find(b => b.textContent === 'pro').click()`))
	until(t, dash, "the property chip", `location.search.includes('filter=prop.plan%3Ais%3Apro') && document.querySelector('#filters .chip .val')?.textContent === 'pro'`, 5*time.Second)
	until(t, dash, "filtered by property", visitors+` === '1'`, 5*time.Second)
	do(t, dash, "unfilter", chromedp.Click(chromedp.CSS(`#filters .chip .remove`)))
	until(t, dash, "no filter", `!location.search.includes('filter')`, 5*time.Second)

	// Click the page: the whole dashboard filters, as a chip, in the URL.
	do(t, dash, "filter by page", chromedp.Evaluate[chromedp.Void](
		`[...document.querySelectorAll('[data-panel=pages] .label')].find(b => b.textContent === '/pricing').click()`))
	until(t, dash, "the filter chip", `document.querySelector('#filters .chip .val')?.textContent === '/pricing'`, 5*time.Second)
	if u := eval[string](t, dash, `location.search`); !strings.Contains(u, "filter=page%3Ais%3A%2Fpricing") {
		t.Fatalf("URL query %q lacks the filter", u)
	}
	until(t, dash, "filtered figures", visitors+` === '1'`, 5*time.Second)
	if href := eval[string](t, dash, `document.querySelector('#export').href`); !strings.Contains(href, "/export.csv?") || !strings.Contains(href, "filter=") {
		t.Fatalf("export link %q does not carry the view", href)
	}
	shot(t, dash, "filtered")
	// is → is not: the only visitor is excluded.
	do(t, dash, "negate the filter", chromedp.Click(chromedp.CSS(`#filters .chip .op`)))
	until(t, dash, "negated filter", visitors+` === '0' && location.search.includes('is_not')`, 5*time.Second)

	// Periods and intervals are in the URL too: 7 days by day, then a custom range.
	do(t, dash, "pick 7 days", chromedp.Evaluate[chromedp.Void](
		`document.querySelector('#period').value = '7d'; document.querySelector('#period').dispatchEvent(new Event('change'))`))
	until(t, dash, "7 daily points", `location.search.includes('period=7d') && document.querySelector('#chart').dataset.points === '7'`, 5*time.Second)
	do(t, dash, "pick a custom range", chromedp.Evaluate[chromedp.Void](`
		document.querySelector('#period').value = 'custom'; document.querySelector('#period').dispatchEvent(new Event('change'));
		document.querySelector('#from').value = '2026-01-01'; document.querySelector('#to').value = '2026-01-03';
		document.querySelector('#apply-range').click()`))
	until(t, dash, "3 daily points", `location.search.includes('from=2026-01-01') && document.querySelector('#chart').dataset.points === '3'`, 5*time.Second)
	do(t, dash, "back", chromedp.NavigateBack(), chromedp.NavigateBack())
	until(t, dash, "today again", `location.search.includes('period=today') && !location.search.includes('7d') && document.querySelector('#period').value === 'today'`, 5*time.Second)

	// Dark mode and a phone-sized screen.
	if _, err := chromedp.Call(dash, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	do(t, dash, "remove the filter", chromedp.Click(chromedp.CSS(`#filters .chip .remove`)))
	until(t, dash, "unfiltered", visitors+` === '1' && !location.search.includes('filter')`, 5*time.Second)
	if bg := eval[string](t, dash, `getComputedStyle(document.body).backgroundColor`); bg != "rgb(15, 18, 24)" {
		t.Fatalf("dark background %q, want rgb(15, 18, 24)", bg)
	}
	shot(t, dash, "dark")
	do(t, dash, "phone", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	until(t, dash, "phone layout", `document.querySelector('.panels').getBoundingClientRect().width < 400 &&
		document.documentElement.scrollWidth <= window.innerWidth`, 5*time.Second)
	shot(t, dash, "phone")
	if v := eval[string](t, dash, visitors); v != "1" {
		t.Errorf("visitors on the phone layout %q, want 1", v)
	}

	// A share link, opened logged out in a separate browser context.
	do(t, ctx, "create a share link",
		chromedp.Navigate(settingsURL),
		chromedp.SendKeys(chromedp.CSS(`input[name=label]`), "Team"),
		chromedp.Click(chromedp.CSS(`form[action$="/shares"] button[type=submit]`)),
		chromedp.WaitVisible(chromedp.CSS(`.links code`)),
	)
	shareURL := eval[string](t, ctx, `document.querySelector('.links code').textContent`)
	anonCtx := newTab(t, ctx, chromedp.WithNewBrowserContext())
	do(t, anonCtx, "open the share link", chromedp.Navigate(shareURL))
	until(t, anonCtx, "shared figures", visitors+` === '1'`, 10*time.Second)
	if n := eval[int](t, anonCtx, `document.querySelectorAll('a[href*="/settings"], form[action="/logout"]').length`); n != 0 {
		t.Fatalf("the shared dashboard shows %d owner controls", n)
	}
	// The link opens this dashboard only: the app still asks to log in.
	if landed, err := chromedp.Run(anonCtx, chromedp.Evaluate[string](`fetch('/app').then(r => new URL(r.url).pathname)`, chromedp.EvalAwaitPromise)); err != nil || landed != "/login" {
		t.Fatalf("GET /app through the share link's browser landed on %q (%v), want /login", landed, err)
	}
	shot(t, anonCtx, "shared")

	// Revoking the link ends the shared stream: the page says so.
	do(t, ctx, "revoke the share link",
		chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`),
		chromedp.Click(chromedp.CSS(`.links form button`)),
		chromedp.WaitNotPresent(chromedp.CSS(`.links code`)),
	)
	until(t, anonCtx, "the revoked notice", `!document.querySelector('#dash-error').hidden`, 10*time.Second)
	shot(t, anonCtx, "revoked")

	// Rotating the token: ingest refuses the old one within a second and takes the new.
	oldToken := eval[string](t, ctx, `document.querySelector('#token').textContent`)
	do(t, ctx, "rotate the token",
		chromedp.Evaluate[chromedp.Void](`window.confirm = () => true`),
		chromedp.Click(chromedp.CSS(`form[action$="/rotate"] button`)),
	)
	until(t, ctx, "the rotated notice", `location.search === '?done=rotated' && document.readyState === 'complete'`, 5*time.Second)
	newToken := eval[string](t, ctx, `document.querySelector('#token').textContent`)
	if newToken == oldToken || len(newToken) < 32 {
		t.Fatalf("token after rotation %q (was %q)", newToken, oldToken)
	}
	collect := func(token string) int {
		req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+port+"/api/collect?t="+token,
			strings.NewReader(`{"n":"pageview","u":"http://`+shopHost+`/rotated","p":"/rotated"}`))
		req.Header.Set("User-Agent", userAgent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	rotated := time.Now()
	for collect(oldToken) != http.StatusUnauthorized {
		if time.Since(rotated) > time.Second {
			t.Fatal("ingest still accepts the old token a second after rotation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("old token refused after %s", time.Since(rotated))
	if status := collect(newToken); status >= 300 {
		t.Fatalf("the new token answers %d", status)
	}
}

// TestDashboardLiveProperties: the dashboard against failures and slow answers. A live
// frame clears an error an earlier request left; a property's values are listed once
// however many frames redraw the panel while its breakdown is on its way; a property key
// holding ':' filters like any other.
func TestDashboardLiveProperties(t *testing.T) {
	browsertest.Find(t) // skip early without a browser
	port := startHaru(t)
	haru := "http://" + haruHost + ":" + port
	browser := browsertest.Start(t, []string{haruHost, shopHost}, 1280, 900)
	ctx, cancel := context.WithTimeout(browser, 120*time.Second)
	defer cancel()

	registerWithSite(t, ctx, haru, "owner@example.com")
	token := eval[string](t, ctx, `document.querySelector('#token').textContent`)
	dashURL := strings.TrimSuffix(eval[string](t, ctx, `location.href`), "/settings") + "?period=today"
	collect := func(body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+port+"/api/collect?t="+token, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("collect: %d", resp.StatusCode)
		}
	}
	collect(`{"n":"pageview","u":"http://` + shopHost + `/pricing","p":"/pricing"}`)
	collect(`{"n":"Signup","u":"http://` + shopHost + `/pricing","p":"/pricing","props":{"plan":"pro","utm:src":"x"}}`)

	visitors := `document.querySelector('.figure[data-metric=visitors] .value').textContent`
	labels := `[...document.querySelectorAll('[data-panel=events] .label')]`
	errorShown := `document.querySelector('#dash-error').hidden ? '' : document.querySelector('#dash-error').textContent`
	// openValues opens the dashboard and the values of property key in the events panel.
	openValues := func(t *testing.T, dash context.Context, key, value string) {
		t.Helper()
		do(t, dash, "open the dashboard", chromedp.Navigate(dashURL))
		until(t, dash, "the custom event", labels+`.some(b => b.textContent === 'Signup')`, 10*time.Second)
		do(t, dash, "properties", chromedp.Click(chromedp.CSS(`[data-panel=events] button[data-dim=props]`)))
		until(t, dash, "the property key", labels+`.some(b => b.textContent === '`+key+`')`, 5*time.Second)
		do(t, dash, "its values", chromedp.Evaluate[chromedp.Void](labels+`.find(b => b.textContent === '`+key+`').click()`))
		until(t, dash, "the value", labels+`.some(b => b.textContent === '`+value+`')`, 5*time.Second)
	}

	t.Run("a live frame clears an earlier error", func(t *testing.T) {
		dash := newTab(t, ctx)
		// The first /dashboard request fails as when the database is briefly unreachable.
		if _, err := chromedp.Call(dash, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: `(() => {
			const orig = window.fetch; let failed = false;
			window.fetch = (u, o) => {
				if (!failed && String(u).includes('/data/dashboard')) {
					failed = true;
					return Promise.resolve(new Response('{"error":"cannot reach the database, retry later"}', {status: 503, headers: {'Content-Type': 'application/json'}}));
				}
				return orig(u, o);
			};
			// The live stream may draw at once: remember the error was shown.
			new MutationObserver(() => {
				const e = document.getElementById('dash-error');
				if (e && !e.hidden && e.textContent) window.errorSeen = e.textContent;
			}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
		})()`}); err != nil {
			t.Fatal(err)
		}
		do(t, dash, "open the dashboard", chromedp.Navigate(dashURL))
		until(t, dash, "the error", `window.errorSeen === 'cannot reach the database, retry later'`, 10*time.Second)
		until(t, dash, "live figures", visitors+` === '1' && document.querySelector('#live-state').classList.contains('live')`, 10*time.Second)
		until(t, dash, "no error", `(`+errorShown+`) === ''`, 2*time.Second)
	})

	t.Run("a property's values are listed once", func(t *testing.T) {
		dash := newTab(t, ctx)
		openValues(t, dash, "plan", "pro")
		count := labels + `.filter(b => b.textContent === 'pro').length`
		// The breakdown now answers slower than live frames come: two events 300 ms apart
		// redraw the panel twice while both requests are on their way.
		eval[bool](t, dash, `(() => { const orig = window.fetch; window.fetch = (u, o) => String(u).includes('/breakdown') ?
			new Promise(r => setTimeout(r, 1500)).then(() => orig(u, o)) : orig(u, o); return true })()`)
		collect(`{"n":"Signup","u":"http://` + shopHost + `/a","p":"/a","props":{"plan":"pro"}}`)
		time.Sleep(300 * time.Millisecond)
		collect(`{"n":"Signup","u":"http://` + shopHost + `/b","p":"/b","props":{"plan":"pro"}}`)
		// Both answers are in: the latest shows the three events.
		until(t, dash, "the new count", `[...document.querySelectorAll('[data-panel=events] .row')].some(r =>
			r.querySelector('.label')?.textContent === 'pro' && r.querySelector('.num').textContent === '3')`, 10*time.Second)
		time.Sleep(2 * time.Second)
		if n := eval[int](t, dash, count); n != 1 {
			t.Fatalf("the value pro is listed %d times", n)
		}
		if n := eval[int](t, dash, `document.querySelectorAll('[data-panel=events] .back').length`); n != 1 {
			t.Fatalf("%d back buttons", n)
		}
	})

	t.Run("a property key with a colon filters", func(t *testing.T) {
		dash := newTab(t, ctx)
		openValues(t, dash, "utm:src", "x")
		do(t, dash, "filter", chromedp.Evaluate[chromedp.Void](labels+`.find(b => b.textContent === 'x').click()`))
		until(t, dash, "the chip", `document.querySelector('#filters .chip .val')?.textContent === 'x'`, 5*time.Second)
		until(t, dash, "filtered figures", visitors+` === '1'`, 5*time.Second)
		if chip := eval[string](t, dash, `document.querySelector('#filters .chip .dim').textContent`); chip != "Property utm:src" {
			t.Errorf("chip %q, want Property utm:src", chip)
		}
		if msg := eval[string](t, dash, errorShown); msg != "" {
			t.Errorf("error %q", msg)
		}
		if q := eval[string](t, dash, `location.search`); !strings.Contains(q, "filter=prop.utm%253Asrc%3Ais%3Ax") {
			t.Errorf("URL query %q lacks the encoded filter", q)
		}
	})

	t.Run("a live view past the cap waits and says why", func(t *testing.T) {
		acct := newTab(t, ctx)
		do(t, acct, "create an API key", chromedp.Navigate(haru+"/app/account"),
			chromedp.SendKeys(chromedp.CSS(`form[action="/app/account/keys"] input[name=name]`), "cap"),
			chromedp.Click(chromedp.CSS(`form[action="/app/account/keys"] button[type=submit]`)),
			chromedp.WaitVisible(chromedp.CSS(`#new-key`)))
		key := eval[string](t, acct, `document.querySelector('#new-key').textContent`)
		site := strings.TrimSuffix(strings.TrimPrefix(dashURL, haru+"/app/sites/"), "?period=today")
		// Every distinct view the site may have, held open by the API until the server
		// refuses one more. Some were the earlier tabs', closed with them: the server lets
		// them go at their next heartbeat (1 s here), so the views are topped up until a
		// refusal holds past that.
		i := 0
		fill := func() {
			for ; ; i++ {
				resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%s/api/v1/sites/%s/live?key=%s&period=today&filter=page:is:/v%d", port, site, key, i))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { resp.Body.Close() })
				if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "" {
					return
				}
				if resp.StatusCode != http.StatusOK || i > 2*live.MaxViewsPerSite {
					t.Fatalf("view %d: status %d", i, resp.StatusCode)
				}
			}
		}
		for attempt := 0; ; attempt++ {
			for n := i; ; n = i {
				fill()
				if i == n && n > 0 {
					break // refused at once, a heartbeat after the last fill
				}
				time.Sleep(2500 * time.Millisecond)
			}
			dash := newTab(t, ctx)
			do(t, dash, "open the dashboard on a view not yet watched", chromedp.Navigate(fmt.Sprintf("%s&filter=page%%3Ais%%3A%%2Fnew%d", dashURL, attempt)))
			until(t, dash, "the live state", `['live', 'busy'].some(s => document.querySelector('#live-state').classList.contains(s))`, 15*time.Second)
			if eval[bool](t, dash, `document.querySelector('#live-state').classList.contains('live')`) && attempt < 2 {
				// A view of an earlier tab, closed late, was let go after the fill:
				// fill its place too and open another view.
				t.Logf("attempt %d: the dashboard went live in a view let go after the fill", attempt)
				continue
			}
			until(t, dash, "the reason shown", `document.querySelector('#live-state').textContent.includes('too many different views')`, 15*time.Second)
			if msg := eval[string](t, dash, errorShown); msg != "" {
				t.Errorf("error %q: the figures themselves load", msg)
			}
			break
		}
	})
}
