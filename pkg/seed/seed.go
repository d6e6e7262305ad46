// Package seed loads realistic historical events for a site: visits of a few pageviews
// from one source, country and browser, some engagement and custom events with
// properties, popular pages far more often than the rest. Raw events go in by COPY; the
// rollups are then rebuilt from them, month by month.
package seed

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Columns are the events columns a generated row fills, in order.
var Columns = []string{"site_id", "ts", "id", "name", "visitor_id", "hostname", "path", "referrer",
	"ref_source", "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "country",
	"region", "browser", "os", "device", "screen_w", "screen_h", "duration_ms", "props"}

type choice struct {
	values []string
	zipf   *rand.Zipf
}

func newChoice(r *rand.Rand, values []string, s float64) choice {
	return choice{values: values, zipf: rand.NewZipf(r, s, 1, uint64(len(values)-1))}
}

func (c choice) pick() string { return c.values[c.zipf.Uint64()] }

// Generator makes events of one site over [From, To).
type Generator struct {
	Site     int64
	From, To time.Time
	r        *rand.Rand

	pages, sources, countries, browsers, oses, campaigns choice
	regions                                              map[string][]string
}

// NewGenerator returns a generator seeded by seed, so equal seeds give equal events.
func NewGenerator(site int64, from, to time.Time, seed uint64) *Generator {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &Generator{Site: site, From: from, To: to, r: r}
	pages := []string{"/", "/pricing", "/features", "/blog", "/about", "/contact", "/signup", "/login", "/docs"}
	for i := range 300 {
		pages = append(pages, fmt.Sprintf("/blog/post-%d", i))
	}
	for i := range 100 {
		pages = append(pages, fmt.Sprintf("/docs/page-%d", i))
	}
	g.pages = newChoice(r, pages, 1.2)
	g.sources = newChoice(r, []string{"", "Google", "Twitter", "news.ycombinator.com", "GitHub", "DuckDuckGo", "Bing", "Reddit", "Facebook", "LinkedIn", "example.org", "Newsletter"}, 1.3)
	g.countries = newChoice(r, []string{"US", "DE", "FR", "GB", "JP", "IN", "BR", "CA", "NL", "ES", "IT", "PL", "SE", "AU", "KR", ""}, 1.1)
	g.browsers = newChoice(r, []string{"Chrome", "Safari", "Firefox", "Edge", "Samsung Internet", "Opera"}, 1.4)
	g.oses = newChoice(r, []string{"Windows", "macOS", "iOS", "Android", "Linux", "ChromeOS"}, 1.3)
	g.campaigns = newChoice(r, []string{"", "launch", "spring-sale", "newsletter-42", "retargeting"}, 1.5)
	g.regions = map[string][]string{"US": {"US-CA", "US-NY", "US-TX", "US-WA"}, "DE": {"DE-BE", "DE-BY"}, "FR": {"FR-IDF", "FR-ARA"}, "GB": {"GB-ENG", "GB-SCT"}}
	return g
}

// Row is one event's column values, in Columns order.
type Row []any

// Visit appends one visit's events to rows: a visitor arriving at a random time.
func (g *Generator) Visit(rows []Row) []Row {
	r := g.r
	span := g.To.Sub(g.From)
	// Busier in the afternoon UTC: reject some night-time starts.
	var start time.Time
	for {
		start = g.From.Add(time.Duration(r.Int64N(int64(span))))
		h := float64(start.UTC().Hour())
		if r.Float64() < 0.55+0.45*math.Sin((h-8)/24*2*math.Pi) {
			break
		}
	}
	// Ids rotate daily, as the ingest's salted hash does: one person, one id a day.
	person := r.Int64N(1 << 40)
	day := start.UTC().Unix() / 86400
	visitor := int64((uint64(person)*0x9e3779b97f4a7c15 ^ uint64(day)*0xbf58476d1ce4e5b9) & math.MaxInt64)

	source := g.sources.pick()
	referrer := ""
	if source != "" {
		referrer = "https://" + source + "/"
	}
	utmSource, utmMedium, utmCampaign := "", "", g.campaigns.pick()
	if utmCampaign != "" {
		utmSource, utmMedium = "newsletter", "email"
	}
	country := g.countries.pick()
	region := ""
	if rs := g.regions[country]; len(rs) > 0 && r.IntN(3) > 0 {
		region = rs[r.IntN(len(rs))]
	}
	device, width, height := "Desktop", 1920, 1080
	switch r.IntN(10) {
	case 0, 1, 2, 3:
		device, width, height = "Mobile", 390, 844
	case 4:
		device, width, height = "Tablet", 820, 1180
	case 5, 6:
		width, height = 1366, 768
	}
	browser, os := g.browsers.pick(), g.oses.pick()

	n := 1 + int(r.ExpFloat64()*1.5)
	if n > 12 {
		n = 12
	}
	ts := start
	add := func(name, path string, durationMS int64, props any) {
		id := uuid.UUID{}
		for i := range id {
			id[i] = byte(r.Uint32())
		}
		id[6] = id[6]&0x0f | 0x70
		id[8] = id[8]&0x3f | 0x80
		rows = append(rows, Row{g.Site, ts, id, name, visitor, "example.com", path, referrer,
			source, utmSource, utmMedium, utmCampaign, "", "", country, region, browser, os, device,
			int32(width), int32(height), durationMS, props})
	}
	for i := 0; i < n && ts.Before(g.To); i++ {
		path := g.pages.pick()
		add("pageview", path, 0, nil)
		stay := time.Duration(5+r.IntN(240)) * time.Second
		if r.IntN(2) == 0 {
			ts = ts.Add(stay)
			if !ts.Before(g.To) {
				break
			}
			add("engagement", path, stay.Milliseconds(), nil)
		}
		if r.IntN(12) == 0 {
			ts = ts.Add(time.Duration(1+r.IntN(20)) * time.Second)
			if !ts.Before(g.To) {
				break
			}
			plans := []string{"free", "pro", "team"}
			add([]string{"Signup", "Download", "Outbound Link: Click"}[r.IntN(3)], path, 0,
				map[string]string{"plan": plans[r.IntN(len(plans))], "variant": fmt.Sprint("v", r.IntN(4))})
		}
		ts = ts.Add(time.Duration(3+r.IntN(120)) * time.Second)
	}
	return rows
}

// Load COPYs about n events of the generator into events (whole visits, so a few more),
// in batches, and returns how many went in.
func Load(ctx context.Context, pool *pgxpool.Pool, g *Generator, n int) (int, error) {
	if _, err := pool.Exec(ctx, `SELECT ensure_event_partitions($1, $2)`, g.From, g.To); err != nil {
		return 0, fmt.Errorf("partitions: %w", err)
	}
	const batch = 50_000
	total := 0
	rows := make([]Row, 0, batch+16)
	flush := func() error {
		if len(rows) == 0 {
			return nil
		}
		src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i], nil })
		if _, err := pool.CopyFrom(ctx, pgx.Identifier{"events"}, Columns, src); err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		total += len(rows)
		rows = rows[:0]
		return nil
	}
	for total+len(rows) < n {
		rows = g.Visit(rows)
		if len(rows) >= batch {
			if err := flush(); err != nil {
				return total, err
			}
		}
	}
	return total, flush()
}

// LocalDays are the first and last local days (in loc) of [from, to], as the UTC
// midnights of their dates: the range the writer's rollup rebuild takes.
func LocalDays(from, to time.Time, loc *time.Location) (first, last time.Time) {
	from, to = from.In(loc), to.In(loc)
	return time.Date(from.Year(), from.Month(), from.Day(), 0, 0, 0, 0, time.UTC),
		time.Date(to.Year(), to.Month(), to.Day(), 0, 0, 0, 0, time.UTC)
}

// Result is what Seed loaded and how long each step took.
type Result struct {
	Events  int
	Copy    time.Duration
	Rebuild time.Duration
}

// Seed loads about n events spread over the days before now into site (seeded by s, so
// reproducible) and rebuilds the site's rollups of those local days (LocalDays) with
// rebuild, such as the writer's RebuildRollupsInChunks.
func Seed(ctx context.Context, pool *pgxpool.Pool, site int64, n, days int, now time.Time, s uint64,
	rebuild func(ctx context.Context, firstDay, lastDay time.Time) error) (Result, error) {
	var tz string
	if err := pool.QueryRow(ctx, `SELECT timezone FROM sites WHERE id = $1`, site).Scan(&tz); errors.Is(err, pgx.ErrNoRows) {
		return Result{}, fmt.Errorf("site %d: no such site", site)
	} else if err != nil {
		return Result{}, fmt.Errorf("site %d: %w", site, err)
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		return Result{}, fmt.Errorf("site %d timezone: %w", site, err)
	}
	from := now.AddDate(0, 0, -days)
	start := time.Now()
	loaded, err := Load(ctx, pool, NewGenerator(site, from, now, s), n)
	if err != nil {
		return Result{}, err
	}
	res := Result{Events: loaded, Copy: time.Since(start)}
	start = time.Now()
	first, last := LocalDays(from, now, loc)
	if err := rebuild(ctx, first, last); err != nil {
		return res, err
	}
	res.Rebuild = time.Since(start)
	return res, nil
}
