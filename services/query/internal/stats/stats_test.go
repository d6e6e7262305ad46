package stats

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/seed"
	"github.com/haru-analytics/haru/services/writer"
)

// seedSite loads about n random events over the 70 days before now into a new site of tz
// and builds its rollups through the writer's rebuild path.
// newTestQuerier is a Querier over a fresh test database.
func newTestQuerier(t *testing.T) *Querier {
	t.Helper()
	q, err := New(pgtest.New(t).Pool)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func seedSite(t *testing.T, q *Querier, tz string, now time.Time, n int, s uint64) int64 {
	t.Helper()
	ctx := context.Background()
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.Fatal(err)
	}
	site := pgtest.NewSite(t, q.pool, tz)
	from := now.AddDate(0, 0, -70)
	g := seed.NewGenerator(site, from, now, s)
	if _, err := seed.Load(ctx, q.pool, g, n); err != nil {
		t.Fatal(err)
	}
	first, last := seed.LocalDays(from, now, loc)
	if err := writer.RebuildRollupsInChunks(ctx, q.pool, site, first, last, 7, nil); err != nil {
		t.Fatal(err)
	}
	return site
}

func parse(t *testing.T, raw string, now time.Time, loc *time.Location) Query {
	t.Helper()
	v, err := url.ParseQuery(raw)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ParseQuery(v, now, now.AddDate(0, 0, -70), loc, 10, true)
	if err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return q
}

// TestRollupsMatchRawEvents: for random data in several timezones, every unfiltered view
// of whole days answers the same from the rollups as from raw events, panel by panel,
// and every breakdown dimension too.
func TestRollupsMatchRawEvents(t *testing.T) {
	ctx := context.Background()
	q := newTestQuerier(t)
	views := []string{"period=today", "period=yesterday", "period=7d", "period=30d",
		"period=month", "period=last_month", "period=30d&interval=week", "period=7d&interval=hour",
		"period=custom&from=2026-10-20&to=2026-11-03", "period=custom&from=2026-10-01&to=2026-11-27&interval=month",
		"period=30d&limit=3&page=2"}
	for i, tz := range []string{"Europe/Paris", "America/New_York", "Asia/Kolkata"} {
		t.Run(tz, func(t *testing.T) {
			loc, _ := time.LoadLocation(tz)
			now := time.Date(2026, 11, 27, 15, 4, 0, 0, loc)
			site := seedSite(t, q, tz, now, 6000, uint64(i+1))
			for _, raw := range views {
				rq := parse(t, raw, now, loc)
				if !rq.rollupable() {
					t.Fatalf("%s does not read rollups", raw)
				}
				// Twice: the second reads past days' panels from the cache.
				if _, err := q.Dashboard(ctx, SiteInfo{ID: site}, rq, now); err != nil {
					t.Fatal(err)
				}
				got, err := q.Dashboard(ctx, SiteInfo{ID: site}, rq, now)
				if err != nil {
					t.Fatal(err)
				}
				rq.Raw = true
				want, err := q.Dashboard(ctx, SiteInfo{ID: site}, rq, now)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(jsonOf(t, want), jsonOf(t, got)); diff != "" {
					t.Errorf("%s: rollups differ from raw events (-raw +rollups):\n%s", raw, diff)
				}
				if got.Summary[Pageviews].Value == 0 || got.Summary[Visits].Value == 0 {
					t.Errorf("%s: empty summary %v", raw, got.Summary)
				}
			}
			for _, dim := range append(append([]string{}, dimensionNames...), "props", "prop.plan", "prop.variant") {
				rq, err := parse(t, "period=30d&limit=50", now, loc).WithDimension(dim)
				if err != nil {
					t.Fatal(err)
				}
				got, err := q.Breakdown(ctx, site, rq)
				if err != nil {
					t.Fatal(err)
				}
				rq.Raw = true
				want, err := q.Breakdown(ctx, site, rq)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(jsonOf(t, want), jsonOf(t, got)); diff != "" {
					t.Errorf("breakdown %s: rollups differ from raw events (-raw +rollups):\n%s", dim, diff)
				}
				if len(got) == 0 && dim != "utm_term" && dim != "utm_content" {
					t.Errorf("breakdown %s is empty", dim)
				}
			}
		})
	}
}

func jsonOf(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestFilters: a filter keeps only matching events, is_not their complement, and two
// filters combine with AND.
func TestFilters(t *testing.T) {
	ctx := context.Background()
	q := newTestQuerier(t)
	loc, _ := time.LoadLocation("Europe/Paris")
	now := time.Date(2026, 11, 27, 15, 4, 0, 0, loc)
	site := seedSite(t, q, "Europe/Paris", now, 6000, 7)
	pv := func(raw string) float64 {
		d, err := q.Dashboard(ctx, SiteInfo{ID: site}, parse(t, raw, now, loc), now)
		if err != nil {
			t.Fatal(err)
		}
		return d.Summary[Pageviews].Value
	}
	all := pv("period=30d")
	for _, f := range []string{"page:is:/pricing", "country:is:US", "browser:is:Firefox", "screen:is:mobile", "prop.plan:is:pro", "entry_page:is:/"} {
		is := pv("period=30d&filter=" + url.QueryEscape(f))
		not := pv("period=30d&filter=" + url.QueryEscape(replaceOp(f)))
		if is == 0 && f != "prop.plan:is:pro" {
			t.Errorf("%s: no pageviews", f)
		}
		if f[:5] != "entry" && is+not != all {
			t.Errorf("%s: is %v + is_not %v != all %v", f, is, not, all)
		}
		both := pv("period=30d&filter=" + url.QueryEscape(f) + "&filter=" + url.QueryEscape("device:is:Desktop"))
		if both > is {
			t.Errorf("%s AND device: %v > %v", f, both, is)
		}
	}
	// The page filter's page panel holds only that page.
	d, err := q.Dashboard(ctx, SiteInfo{ID: site}, parse(t, "period=30d&filter=page:is:/pricing", now, loc), now)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Panels["page"]) != 1 || d.Panels["page"][0]["value"] != "/pricing" {
		t.Errorf("page panel under page filter = %v", d.Panels["page"])
	}
}

func replaceOp(f string) string {
	for i := 0; i+4 <= len(f); i++ {
		if f[i:i+4] == ":is:" {
			return f[:i] + ":is_not:" + f[i+4:]
		}
	}
	return f
}

// TestOnline counts distinct visitors of the last five minutes and decays without traffic.
func TestOnline(t *testing.T) {
	ctx := context.Background()
	q := newTestQuerier(t)
	site := pgtest.NewSite(t, q.pool, "UTC")
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	if _, err := q.pool.Exec(ctx, `SELECT ensure_event_partitions($1, $1)`, now); err != nil {
		t.Fatal(err)
	}
	for i, ago := range []time.Duration{10 * time.Second, time.Minute, 4 * time.Minute, 6 * time.Minute} {
		if _, err := q.pool.Exec(ctx, `INSERT INTO events (site_id, ts, id, name, visitor_id) VALUES ($1, $2, gen_random_uuid(), 'pageview', $3)`,
			site, now.Add(-ago), i%3); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		at   time.Time
		want int64
	}{{now, 3}, {now.Add(2 * time.Minute), 2}, {now.Add(10 * time.Minute), 0}} {
		got, err := q.Online(ctx, site, tt.at)
		if err != nil || got != tt.want {
			t.Errorf("online at %s = %d, %v; want %d", tt.at, got, err, tt.want)
		}
	}
}

// TestParseQueryErrors: every bad parameter is refused naming its field.
func TestParseQueryErrors(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for raw, field := range map[string]string{
		"period=fortnight":                            "period",
		"period=custom":                               "from",
		"period=custom&from=2026-01-01":               "to",
		"period=custom&from=2026-13-01&to=x":          "from",
		"period=custom&from=2026-02-01&to=2026-01-01": "to",
		"period=custom&from=2000-01-01&to=2199-01-01": "to",
		"interval=minute":                             "interval",
		"period=all&interval=hour":                    "interval",
		"filter=page":                                 "filter",
		"filter=page:like:/x":                         "filter",
		"filter=planet:is:mars":                       "filter",
		"filter=prop:plan:is:pro":                     "filter",
		"filter=props:is:x":                           "filter",
		"filter=prop.:is:x":                           "filter",
		"metrics=visitors,clicks":                     "metrics",
		"compare=last_year":                           "compare",
		"limit=0":                                     "limit",
		"limit=1001":                                  "limit",
		"limit=ten":                                   "limit",
		"page=0":                                      "page",
	} {
		v, _ := url.ParseQuery(raw)
		_, err := ParseQuery(v, now, now.AddDate(-3, 0, 0), time.UTC, 10, true)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != field {
			t.Errorf("%s: err = %v, want a FieldError on %s", raw, err, field)
		}
	}
	q, err := ParseQuery(url.Values{}, now, now, time.UTC, 10, true)
	if err != nil {
		t.Fatal(err)
	}
	for _, dim := range []string{"", "planet", "prop.", "prop:plan"} {
		if _, err := q.WithDimension(dim); err == nil {
			t.Errorf("dimension %q accepted", dim)
		}
	}
	// A value may hold colons.
	v, _ := url.ParseQuery("filter=" + url.QueryEscape("page:is:/a:b:c"))
	q, err = ParseQuery(v, now, now, time.UTC, 10, true)
	if err != nil || q.Filters[0].Value != "/a:b:c" {
		t.Fatalf("filter with colons = %+v, %v", q.Filters, err)
	}
}

// TestFilterPropertyKeyPercentEncoded: a filter is dimension:op:value, so a property key
// holding ':' is written percent-encoded (as the dashboard does), and '%' with it.
func TestFilterPropertyKeyPercentEncoded(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name    string
		filter  string
		wantKey string // the property the filter reads
		want    Filter // Dimension (as Canonical writes it), Op and Value
	}{
		{name: "colon", filter: "prop.utm%3Asrc:is:x", wantKey: "utm:src", want: Filter{Dimension: "prop.utm%3Asrc", Op: "is", Value: "x"}},
		{name: "lower-case escape", filter: "prop.utm%3asrc:is_not:a:b", wantKey: "utm:src", want: Filter{Dimension: "prop.utm%3Asrc", Op: "is_not", Value: "a:b"}},
		{name: "percent", filter: "prop.100%25:is:x", wantKey: "100%", want: Filter{Dimension: "prop.100%25", Op: "is", Value: "x"}},
		{name: "needless escape", filter: "prop.pl%61n:is:pro", wantKey: "plan", want: Filter{Dimension: "prop.plan", Op: "is", Value: "pro"}},
		{name: "plain", filter: "prop.plan:is:pro", wantKey: "plan", want: Filter{Dimension: "prop.plan", Op: "is", Value: "pro"}},
		{name: "plus stays", filter: "prop.a+b:is:x", wantKey: "a+b", want: Filter{Dimension: "prop.a+b", Op: "is", Value: "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q, err := ParseQuery(url.Values{"filter": {tt.filter}}, now, now, time.UTC, 10, true)
			if err != nil {
				t.Fatal(err)
			}
			got := q.Filters[0]
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreUnexported(Filter{})); diff != "" || got.dim.prop != tt.wantKey {
				t.Fatalf("filter %q reads property %q, want %q; filter (-want +got):\n%s", tt.filter, got.dim.prop, tt.wantKey, diff)
			}
		})
	}
	for _, bad := range []string{"prop.100%:is:x", "prop.%zz:is:x", "prop.%3:is:x", "prop.%00:is:x", "prop.%C3:is:x", "prop.%3A:is"} {
		_, err := ParseQuery(url.Values{"filter": {bad}}, now, now, time.UTC, 10, true)
		if fe, ok := err.(*FieldError); !ok || fe.Field != "filter" {
			t.Errorf("filter %q: err = %v, want a FieldError on filter", bad, err)
		}
	}
}

// TestCanonicalRoundTrips: a query's canonical form, the key live streams of one view
// share, parses back to the same query, with the caller's defaults either way: a
// parameter it dropped (page, metrics) would give views that differ one key, and a
// page-3 stream page 1's figures.
func TestCanonicalRoundTrips(t *testing.T) {
	now := time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC) // Paris changes clocks that day
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, raw string
	}{
		{"defaults", ""},
		{"page", "period=7d&page=3"},
		{"page and limit", "period=30d&limit=25&page=40"},
		{"metrics in their order", "metrics=pageviews,visitors,bounce_rate"},
		{"compare none", "period=month&compare=none"},
		{"compare previous", "period=year&compare=previous"},
		{"custom range", "period=custom&from=2026-03-01&to=2026-03-29&interval=week"},
		{"24 hours", "period=24h"},
		{"all", "period=all&interval=month&page=2"},
		{"filters", "filter=page:is:/a:b&filter=country:is_not:JP&filter=prop.plan:is:pro&page=2"},
		{"property key with a colon", "filter=" + url.QueryEscape("prop.utm%3Asrc:is:a:b") + "&filter=" + url.QueryEscape("prop.100%25:is_not:x")},
		{"everything", "period=last_month&interval=day&filter=source:is:Google&metrics=visits&compare=none&limit=1000&page=1000000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, loc := range []*time.Location{time.UTC, paris} {
				for _, compare := range []bool{true, false} {
					v, _ := url.ParseQuery(tt.raw)
					q, err := ParseQuery(v, now, now.AddDate(-1, 0, 0), loc, 10, compare)
					if err != nil {
						t.Fatal(err)
					}
					back, err := url.ParseQuery(q.Canonical())
					if err != nil {
						t.Fatal(err)
					}
					// Parsed with the other default: the canonical form must not lean on it.
					q2, err := ParseQuery(back, now, now.AddDate(-1, 0, 0), loc, 10, !compare)
					if err != nil {
						t.Fatalf("canonical %q refused: %v", q.Canonical(), err)
					}
					if diff := cmp.Diff(q, q2, cmpopts.IgnoreUnexported(Query{}, Period{}, Filter{})); diff != "" {
						t.Fatalf("%s, compare default %v: %q parses back different (-want +got):\n%s", loc, compare, q.Canonical(), diff)
					}
				}
			}
		})
	}
}

func TestParsePeriod(t *testing.T) {
	paris, _ := time.LoadLocation("Europe/Paris")
	tokyo, _ := time.LoadLocation("Asia/Tokyo")
	d := func(loc *time.Location, y int, m time.Month, day int) time.Time {
		return time.Date(y, m, day, 0, 0, 0, 0, loc)
	}
	tests := []struct {
		name, from, to, interval string
		now                      time.Time
		wantFrom, wantTo         time.Time
		wantInterval             string
		buckets                  int
		prevFrom                 time.Time
	}{
		{name: "today", now: time.Date(2026, 3, 1, 0, 30, 0, 0, tokyo), wantFrom: d(tokyo, 2026, 3, 1), wantTo: d(tokyo, 2026, 3, 2), wantInterval: Hour, buckets: 24, prevFrom: d(tokyo, 2026, 2, 28)},
		{name: "yesterday", now: time.Date(2026, 3, 1, 0, 30, 0, 0, tokyo), wantFrom: d(tokyo, 2026, 2, 28), wantTo: d(tokyo, 2026, 3, 1), wantInterval: Hour, buckets: 24, prevFrom: d(tokyo, 2026, 2, 27)},
		// Spring forward in Paris: 23 hours; fall back: 25.
		{name: "today", now: time.Date(2026, 3, 29, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 3, 29), wantTo: d(paris, 2026, 3, 30), wantInterval: Hour, buckets: 23, prevFrom: d(paris, 2026, 3, 28)},
		{name: "today", now: time.Date(2026, 10, 25, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 10, 25), wantTo: d(paris, 2026, 10, 26), wantInterval: Hour, buckets: 25, prevFrom: d(paris, 2026, 10, 24)},
		{name: "7d", now: time.Date(2026, 3, 31, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 3, 25), wantTo: d(paris, 2026, 4, 1), wantInterval: Day, buckets: 7, prevFrom: d(paris, 2026, 3, 18)},
		{name: "30d", now: time.Date(2026, 3, 1, 0, 30, 0, 0, tokyo), wantFrom: d(tokyo, 2026, 1, 31), wantTo: d(tokyo, 2026, 3, 2), wantInterval: Day, buckets: 30, prevFrom: d(tokyo, 2026, 1, 1)},
		// Month ends: this month of the 31st, last month of March (February).
		{name: "month", now: time.Date(2026, 1, 31, 23, 0, 0, 0, paris), wantFrom: d(paris, 2026, 1, 1), wantTo: d(paris, 2026, 2, 1), wantInterval: Day, buckets: 31, prevFrom: d(paris, 2025, 12, 1)},
		{name: "last_month", now: time.Date(2026, 3, 31, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 2, 1), wantTo: d(paris, 2026, 3, 1), wantInterval: Day, buckets: 28, prevFrom: d(paris, 2026, 1, 4)},
		{name: "year", now: time.Date(2026, 12, 31, 23, 59, 0, 0, paris), wantFrom: d(paris, 2026, 1, 1), wantTo: d(paris, 2027, 1, 1), wantInterval: Month, buckets: 12, prevFrom: d(paris, 2025, 1, 1)},
		{name: "12mo", now: time.Date(2026, 11, 27, 12, 0, 0, 0, paris), wantFrom: d(paris, 2025, 12, 1), wantTo: d(paris, 2026, 12, 1), wantInterval: Month, buckets: 12, prevFrom: d(paris, 2024, 12, 1)},
		{name: "custom", from: "2026-03-28", to: "2026-03-29", now: time.Date(2026, 11, 27, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 3, 28), wantTo: d(paris, 2026, 3, 30), wantInterval: Day, buckets: 2, prevFrom: d(paris, 2026, 3, 26)},
		{name: "custom", from: "2026-03-01", to: "2026-03-31", interval: Week, now: time.Date(2026, 11, 27, 12, 0, 0, 0, paris), wantFrom: d(paris, 2026, 3, 1), wantTo: d(paris, 2026, 4, 1), wantInterval: Week, buckets: 6, prevFrom: d(paris, 2026, 1, 29)},
	}
	for _, tt := range tests {
		t.Run(tt.name+tt.now.String(), func(t *testing.T) {
			p, err := ParsePeriod(tt.name, tt.from, tt.to, tt.interval, tt.now, time.Time{}, tt.now.Location())
			if err != nil {
				t.Fatal(err)
			}
			if !p.From.Equal(tt.wantFrom) || !p.To.Equal(tt.wantTo) || p.Interval != tt.wantInterval || !p.DayAligned() {
				t.Fatalf("= [%s, %s) %s; want [%s, %s) %s", p.From, p.To, p.Interval, tt.wantFrom, tt.wantTo, tt.wantInterval)
			}
			if n := len(p.Buckets()); n != tt.buckets {
				t.Errorf("%d buckets, want %d", n, tt.buckets)
			}
			if prev := p.Previous(); !prev.From.Equal(tt.prevFrom) || !prev.To.Equal(p.From) {
				t.Errorf("previous = [%s, %s), want [%s, %s)", prev.From, prev.To, tt.prevFrom, p.From)
			}
		})
	}
	now := time.Date(2026, 3, 1, 0, 30, 0, 0, tokyo)
	p, err := ParsePeriod("24h", "", "", "", now, time.Time{}, tokyo)
	if err != nil || !p.From.Equal(now.Add(-24*time.Hour)) || p.DayAligned() || p.Interval != Hour || len(p.Buckets()) != 25 {
		t.Fatalf("24h = %+v, %v", p, err)
	}
	p, err = ParsePeriod("all", "", "", "", now, d(tokyo, 2025, 5, 17), tokyo)
	if err != nil || !p.From.Equal(d(tokyo, 2025, 5, 17)) || !p.To.Equal(d(tokyo, 2026, 3, 2)) || p.Interval != Month {
		t.Fatalf("all = %+v, %v", p, err)
	}
}

// TestMergeRows: the past days' rows and today's add up by value and rank again.
func TestMergeRows(t *testing.T) {
	past := []row{{"/a", totals{Visitors: 5, Pageviews: 9}}, {"/b", totals{Visitors: 4}}, {"/c", totals{Visitors: 1}}}
	today := []row{{"/c", totals{Visitors: 4, Pageviews: 1}}, {"/d", totals{Visitors: 2}}}
	got := mergeRows(past, today, false)
	want := []string{"/a", "/c", "/b", "/d"}
	for i, r := range got {
		if r.value != want[i] {
			t.Fatalf("merged = %v, want order %v", got, want)
		}
	}
	if got[1].t.Visitors != 5 || got[1].t.Pageviews != 1 || past[2].t.Visitors != 1 {
		t.Fatalf("merged /c = %+v (past /c now %+v)", got[1], past[2])
	}
	if p := pageOf(got, 2, 2); len(p) != 2 || p[0].value != "/b" {
		t.Fatalf("page 2 = %v", p)
	}
	if p := pageOf(got, 2, 10); len(p) != 0 {
		t.Fatalf("page past the end = %v", p)
	}
}
