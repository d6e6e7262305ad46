// Package stats answers questions about a site's traffic: the query model of the stats
// API and the dashboard. Unfiltered views of whole local days read only the rollups;
// filtered views and ranges that do not fall on local days read raw events.
package stats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"
)

// Querier runs stats queries.
type Querier struct {
	pool *pgxpool.Pool
	// parallel bounds how many statements of one view run at once.
	parallel int
	tracer   trace.Tracer
	past     *pastCache[pastKey, []row]
	rawPast  *pastCache[rawKey, result]
}

// New returns a Querier over pool.
func New(pool *pgxpool.Pool) (*Querier, error) {
	if pool == nil {
		return nil, errors.New("stats: nil pool")
	}
	n := int(pool.Config().MaxConns) / 2
	return &Querier{pool: pool, parallel: max(2, min(n, 4)), tracer: noop.NewTracerProvider().Tracer(""),
		past:    newPastCache[pastKey, []row](pastCacheRows, pastCacheTTL),
		rawPast: newPastCache[rawKey, result](pastCacheRows, pastCacheTTL)}, nil
}

// WithTracer makes q record a span per SQL statement under tp.
func (q *Querier) WithTracer(tp trace.TracerProvider) *Querier {
	q.tracer = tp.Tracer("haru/query/stats")
	return q
}

// statement is one SQL statement and its arguments.
type statement struct {
	sql  string
	args []any
}

// plannedEachTime are st's arguments with pgx told to run it as an unnamed statement (its
// description cached), which Postgres plans anew each time with the parameters' values.
// The statements over raw events need that: after five runs of a prepared statement on
// one connection Postgres may keep a generic plan, blind to the range and the filter's
// value, and at 10 M events one view in ten of a filtered 30 days then took 1.2-1.4 s
// instead of 10-20 ms. Rollup statements stay prepared: their plans do not depend on the
// values.
func (st statement) plannedEachTime() []any {
	return append([]any{pgx.QueryExecModeCacheDescribe}, st.args...)
}

// totals are the sums one section row carries.
type totals struct {
	Pageviews, Events, Visitors, Visits, Bounces, DurationMS int64
}

func (t *totals) add(o totals) {
	t.Pageviews += o.Pageviews
	t.Events += o.Events
	t.Visitors += o.Visitors
	t.Visits += o.Visits
	t.Bounces += o.Bounces
	t.DurationMS += o.DurationMS
}

// metric is the value of a named metric.
func (t totals) metric(name string) float64 {
	switch name {
	case Visitors:
		return float64(t.Visitors)
	case Pageviews:
		return float64(t.Pageviews)
	case Visits:
		return float64(t.Visits)
	case Events:
		return float64(t.Events)
	case ViewsPerVisit:
		return ratio(float64(t.Pageviews), float64(t.Visits), 100)
	case BounceRate:
		return ratio(100*float64(t.Bounces), float64(t.Visits), 10)
	case VisitDuration:
		return ratio(float64(t.DurationMS)/1000, float64(t.Visits), 1)
	}
	return 0
}

// ratio is a/b rounded to 1/scale, 0 when b is 0.
func ratio(a, b, scale float64) float64 {
	if b == 0 {
		return 0
	}
	return math.Round(a/b*scale) / scale
}

// row is one breakdown row.
type row struct {
	value string
	t     totals
}

// result is what a plan's statements answered.
type result struct {
	sum    totals
	series map[string]totals
	dims   map[string][]row
}

// run answers pl for p: from the rollups when q allows, else from raw events.
func (q *Querier) run(ctx context.Context, site int64, qu Query, p Period, pl plan) (result, error) {
	// Hourly rollups start on UTC hours: a zone whose midnight is not one (a half-hour
	// offset) gets its hourly series from raw events.
	hourly := p.Interval == Hour && pl.series
	raw := qu.Raw || len(qu.Filters) > 0 || !p.DayAligned() || (hourly && !p.From.Equal(p.From.Truncate(time.Hour)))
	if raw {
		return q.rawRun(ctx, site, qu.Filters, p, pl, qu.at())
	}
	// Panels go through the cache of past days, below.
	stmts := rollupStatements(site, p, plan{summary: pl.summary, series: pl.series})
	res := result{series: map[string]totals{}, dims: map[string][]row{}}
	rows := make([][]sectionRow, len(stmts))
	panels := make([][]row, len(pl.dims))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(q.parallel)
	for i, st := range stmts {
		g.Go(func() (err error) {
			rows[i], err = q.query(gctx, st, false)
			return err
		})
	}
	for i, d := range pl.dims {
		g.Go(func() (err error) {
			panels[i], err = q.rollupRows(gctx, site, p, d, qu.at())
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return result{}, err
	}
	for _, rs := range rows {
		res.merge(rs)
	}
	for i, d := range pl.dims {
		res.dims[d.name] = pageOf(panels[i], pl.limit, pl.offset)
	}
	return res, nil
}

// span starts the span of statement st reading source; end closes it with the
// statement's outcome.
func (q *Querier) span(ctx context.Context, st statement, source string) (context.Context, func(error)) {
	ctx, span := q.tracer.Start(ctx, "stats SELECT", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", "postgresql"),
			attribute.String("db.query.text", st.sql), attribute.String("haru.stats.source", source)))
	return ctx, func(err error) {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, "query failed")
		}
		span.End()
	}
}

// query runs one statement under a span of its own.
func (q *Querier) query(ctx context.Context, st statement, raw bool) (_ []sectionRow, err error) {
	source := "rollups"
	if raw {
		source = "raw_events"
	}
	ctx, end := q.span(ctx, st, source)
	defer func() { end(err) }()
	args := st.args
	if raw {
		args = st.plannedEachTime()
	}
	r, err := q.pool.Query(ctx, st.sql, args...)
	if err != nil {
		return nil, fmt.Errorf("stats query: %w", err)
	}
	out, err := pgx.CollectRows(r, func(r pgx.CollectableRow) (sectionRow, error) {
		var s sectionRow
		err := r.Scan(&s.section, &s.label, &s.t.Pageviews, &s.t.Events, &s.t.Visitors, &s.t.Visits, &s.t.Bounces, &s.t.DurationMS)
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("stats query: %w", err)
	}
	return out, nil
}

// merge adds section rows to r.
func (r *result) merge(rs []sectionRow) {
	for _, s := range rs {
		switch s.section {
		case "sum", "vsum":
			r.sum.add(s.t)
		case "ser", "vser":
			t := r.series[s.label]
			t.add(s.t)
			r.series[s.label] = t
		default:
			r.dims[s.section] = append(r.dims[s.section], row{s.label, s.t})
		}
	}
}

type sectionRow struct {
	section, label string
	t              totals
}

// Metric is a figure of the period and, when compared, of the previous one.
type Metric struct {
	Value    float64  `json:"value"`
	Previous *float64 `json:"previous"`
	// Change is the percent change from Previous, null when Previous is 0 or absent.
	Change *float64 `json:"change"`
}

func metricsOf(cur totals, prev *totals, names []string) map[string]Metric {
	out := make(map[string]Metric, len(names))
	for _, name := range names {
		m := Metric{Value: cur.metric(name)}
		if prev != nil {
			pv := prev.metric(name)
			m.Previous = &pv
			if pv != 0 {
				c := math.Round((m.Value-pv)/pv*1000) / 10
				m.Change = &c
			}
		}
		out[name] = m
	}
	return out
}

// Point is one bucket of a time series: its start and its metrics.
type Point map[string]any

func (q *Querier) series(p Period, res result, names []string) []Point {
	buckets := p.Buckets()
	out := make([]Point, 0, len(buckets))
	for _, b := range buckets {
		t := res.series[p.bucketKey(b)]
		pt := Point{"date": b}
		for _, m := range names {
			pt[m] = t.metric(m)
		}
		out = append(out, pt)
	}
	return out
}

// Row is one breakdown row: the dimension's value and its metrics.
type Row map[string]any

func rowsOf(d dimension, rs []row, names []string) []Row {
	if len(names) == 0 {
		names = d.breakdownMetrics()
	}
	out := make([]Row, 0, len(rs))
	for _, r := range rs {
		row := Row{"value": r.value}
		for _, m := range names {
			row[m] = r.t.metric(m)
		}
		out = append(out, row)
	}
	return out
}

// SiteInfo is the site a view belongs to, as the dashboard shows it.
type SiteInfo struct {
	ID       int64  `json:"id"`
	Name     string `json:"name"`
	Domain   string `json:"domain"`
	Timezone string `json:"timezone"`
}

// Dashboard is everything one dashboard view shows.
type Dashboard struct {
	Site        SiteInfo          `json:"site"`
	Period      Period            `json:"period"`
	Filters     []Filter          `json:"filters"`
	Summary     map[string]Metric `json:"summary"`
	Online      int64             `json:"online"`
	Series      []Point           `json:"series"`
	Panels      map[string][]Row  `json:"panels"`
	GeneratedAt time.Time         `json:"generated_at"`
}

// OnlineWindow is how far back "online" looks.
const OnlineWindow = 5 * time.Minute

// Dashboard computes a whole dashboard view of site at now: summary (compared with the
// previous period when asked), series, every panel and the visitors online.
func (q *Querier) Dashboard(ctx context.Context, site SiteInfo, qu Query, now time.Time) (Dashboard, error) {
	d := Dashboard{Site: site, Period: qu.Period, Filters: qu.Filters, GeneratedAt: now.UTC()}
	if d.Filters == nil {
		d.Filters = []Filter{}
	}
	dims := dashboardDims()
	pl := plan{summary: true, series: true, dims: dims, limit: qu.Limit, offset: (qu.Page - 1) * qu.Limit}
	var cur, prev result
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { cur, err = q.run(gctx, site.ID, qu, qu.Period, pl); return })
	if qu.Compare {
		g.Go(func() (err error) {
			prev, err = q.run(gctx, site.ID, qu, qu.Period.Previous(), plan{summary: true})
			return
		})
	}
	g.Go(func() (err error) { d.Online, err = q.Online(gctx, site.ID, now); return })
	if err := g.Wait(); err != nil {
		return Dashboard{}, err
	}
	var pp *totals
	if qu.Compare {
		pp = &prev.sum
	}
	d.Summary = metricsOf(cur.sum, pp, AllMetrics)
	d.Series = q.series(qu.Period, cur, AllMetrics)
	d.Panels = make(map[string][]Row, len(dims))
	for _, dim := range dims {
		d.Panels[dim.name] = rowsOf(dim, cur.dims[dim.name], nil)
	}
	return d, nil
}

// dashboardDims are the dimensions of the dashboard's panels.
func dashboardDims() []dimension {
	dims := make([]dimension, 0, len(dashboardPanels))
	for _, name := range dashboardPanels {
		dim, _ := lookupDimension("dimension", name, true)
		dims = append(dims, dim)
	}
	return dims
}

// Aggregate is the summary of a view, compared with the previous period when asked.
func (q *Querier) Aggregate(ctx context.Context, site int64, qu Query) (map[string]Metric, error) {
	var cur, prev result
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { cur, err = q.run(gctx, site, qu, qu.Period, plan{summary: true}); return })
	if qu.Compare {
		g.Go(func() (err error) {
			prev, err = q.run(gctx, site, qu, qu.Period.Previous(), plan{summary: true})
			return
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	var pp *totals
	if qu.Compare {
		pp = &prev.sum
	}
	return metricsOf(cur.sum, pp, q.metricNames(qu)), nil
}

func (q *Querier) metricNames(qu Query) []string {
	if len(qu.Metrics) == 0 {
		return AllMetrics
	}
	return qu.Metrics
}

// Timeseries is the view's series, one point per bucket of its interval.
func (q *Querier) Timeseries(ctx context.Context, site int64, qu Query) ([]Point, error) {
	res, err := q.run(ctx, site, qu, qu.Period, plan{series: true})
	if err != nil {
		return nil, err
	}
	return q.series(qu.Period, res, q.metricNames(qu)), nil
}

// Breakdown is one page of the rows of qu's dimension (set by WithDimension).
func (q *Querier) Breakdown(ctx context.Context, site int64, qu Query) ([]Row, error) {
	if qu.Dimension == "" {
		return nil, fieldErr("dimension", "dimension is required")
	}
	allowed := qu.dim.breakdownMetrics()
	for _, m := range qu.Metrics {
		if !slices.Contains(allowed, m) {
			return nil, fieldErr("metrics", "metric %s is not available for dimension %s: want %s", m, qu.Dimension, strings.Join(allowed, ", "))
		}
	}
	res, err := q.run(ctx, site, qu, qu.Period, plan{dims: []dimension{qu.dim}, limit: qu.Limit, offset: (qu.Page - 1) * qu.Limit})
	if err != nil {
		return nil, err
	}
	return rowsOf(qu.dim, res.dims[qu.dim.name], qu.Metrics), nil
}

// sortRows orders breakdown rows as the SQL ranks them: by visits for entry and exit
// pages, else by visitors, pageviews and events; then by value, bytewise.
func sortRows(rs []row, visit bool) {
	slices.SortStableFunc(rs, func(a, b row) int {
		if visit {
			if c := cmp.Compare(b.t.Visits, a.t.Visits); c != 0 {
				return c
			}
		} else {
			if c := cmp.Compare(b.t.Visitors, a.t.Visitors); c != 0 {
				return c
			}
			if c := cmp.Compare(b.t.Pageviews, a.t.Pageviews); c != 0 {
				return c
			}
			if c := cmp.Compare(b.t.Events, a.t.Events); c != 0 {
				return c
			}
		}
		return strings.Compare(a.value, b.value)
	})
}

// Online counts the distinct visitors of site in the OnlineWindow before now; with no
// traffic it falls to 0 by itself.
func (q *Querier) Online(ctx context.Context, site int64, now time.Time) (int64, error) {
	var n int64
	st := statement{onlineSQL, []any{site, now.Add(-OnlineWindow), now}}
	if err := q.pool.QueryRow(ctx, st.sql, st.plannedEachTime()...).Scan(&n); err != nil {
		return 0, fmt.Errorf("online: %w", err)
	}
	return n, nil
}

// FirstDay is the site's first local day with data (zero without any), the start of
// the "all" period.
func (q *Querier) FirstDay(ctx context.Context, site int64, loc *time.Location) (time.Time, error) {
	var s *string
	if err := q.pool.QueryRow(ctx, firstDaySQL, site).Scan(&s); err != nil {
		return time.Time{}, fmt.Errorf("first day: %w", err)
	}
	if s == nil {
		return time.Time{}, nil
	}
	return time.ParseInLocation(time.DateOnly, *s, loc)
}
