package stats

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haru-analytics/haru/pkg/event"
)

// ErrBadQuery is a query the caller worded wrongly; errors wrapping it are FieldErrors.
var ErrBadQuery = errors.New("bad query")

// FieldError names the parameter a bad query got wrong.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Msg }

// Unwrap makes every FieldError an ErrBadQuery.
func (e *FieldError) Unwrap() error { return ErrBadQuery }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Metrics, in the order they are listed.
const (
	Visitors      = "visitors"
	Pageviews     = "pageviews"
	Visits        = "visits"
	ViewsPerVisit = "views_per_visit"
	BounceRate    = "bounce_rate"
	VisitDuration = "visit_duration"
	Events        = "events"
)

// AllMetrics are every metric, in display order.
var AllMetrics = []string{Visitors, Pageviews, Visits, ViewsPerVisit, BounceRate, VisitDuration, Events}

// Filter keeps events whose dimension is (or is not) value.
type Filter struct {
	Dimension string `json:"dimension"`
	Op        string `json:"op"`
	Value     string `json:"value"`
	dim       dimension
}

// Query is one view of a site's stats: what the dashboard's URL holds.
type Query struct {
	Period  Period
	Filters []Filter
	// Metrics asked for; empty means every metric that applies.
	Metrics []string
	Compare bool
	Limit   int
	Page    int
	// Dimension of a breakdown ("" elsewhere).
	Dimension string
	// Raw computes from raw events even where rollups would answer: the baseline the
	// rollups are measured against.
	Raw bool
	dim dimension
	// now is the time the period was read at; it tells today from the settled past days.
	now time.Time
}

// Limits of a query.
const (
	maxLimit       = 1000
	maxFilters     = 20
	maxFilterValue = 1000
	maxPropKey     = 200
)

// ParseQuery reads a query from URL parameters (see the stats API contract). now is the
// current time, loc the site's timezone, first the site's first day with data.
// defaultLimit is the limit when none is given; compareDefault whether to compare.
func ParseQuery(v url.Values, now, first time.Time, loc *time.Location, defaultLimit int, compareDefault bool) (Query, error) {
	p, err := ParsePeriod(v.Get("period"), v.Get("from"), v.Get("to"), v.Get("interval"), now, first, loc)
	if err != nil {
		return Query{}, err
	}
	q := Query{Period: p, Compare: compareDefault, Limit: defaultLimit, Page: 1, now: now}
	if len(v["filter"]) > maxFilters {
		return Query{}, fieldErr("filter", "at most %d filters", maxFilters)
	}
	for _, raw := range v["filter"] {
		f, err := parseFilter(raw)
		if err != nil {
			return Query{}, err
		}
		q.Filters = append(q.Filters, f)
	}
	if m := v.Get("metrics"); m != "" {
		for _, name := range strings.Split(m, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(AllMetrics, name) {
				return Query{}, fieldErr("metrics", "unknown metric %q: want %s", name, strings.Join(AllMetrics, ", "))
			}
			if !slices.Contains(q.Metrics, name) {
				q.Metrics = append(q.Metrics, name)
			}
		}
	}
	switch v.Get("compare") {
	case "":
	case "previous":
		q.Compare = true
	case "none":
		q.Compare = false
	default:
		return Query{}, fieldErr("compare", "compare %q: want previous or none", v.Get("compare"))
	}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxLimit {
			return Query{}, fieldErr("limit", "limit %q: want a whole number 1..%d", s, maxLimit)
		}
		q.Limit = n
	}
	if s := v.Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 1_000_000 {
			return Query{}, fieldErr("page", "page %q: want a whole number from 1", s)
		}
		q.Page = n
	}
	return q, nil
}

// at is the time q was read at, else the current time.
func (q Query) at() time.Time {
	if q.now.IsZero() {
		return time.Now()
	}
	return q.now
}

// WithDimension sets the dimension of a breakdown, "" being refused.
func (q Query) WithDimension(name string) (Query, error) {
	if name == "" {
		return Query{}, fieldErr("dimension", "dimension is required: want one of %s, prop.<key> or props", strings.Join(dimensionNames, ", "))
	}
	d, err := lookupDimension("dimension", name, true)
	if err != nil {
		return Query{}, err
	}
	q.Dimension, q.dim = name, d
	return q, nil
}

// parseFilter reads <dimension>:<is|is_not>:<value>. The value may hold ':', and so may
// a property key: in prop.<key> the key is percent-encoded (at least its '%' and ':').
// The filter keeps the dimension with only those two escaped, so every spelling of a key
// gives one Canonical view, which parses back to the same filter.
func parseFilter(raw string) (Filter, error) {
	parts := strings.SplitN(raw, ":", 3)
	if len(parts) != 3 {
		return Filter{}, fieldErr("filter", "filter %q: want <dimension>:<is|is_not>:<value>", raw)
	}
	dim, name := parts[0], parts[0]
	if enc, ok := strings.CutPrefix(dim, "prop."); ok {
		key, err := url.PathUnescape(enc)
		if err != nil {
			return Filter{}, fieldErr("filter", "filter %q: the property key is not percent-encoded (%% as %%25, : as %%3A)", raw)
		}
		name, dim = "prop."+key, "prop."+propKeyEscaper.Replace(key)
	}
	d, err := lookupDimension("filter", name, false)
	if err != nil {
		return Filter{}, err
	}
	if parts[1] != "is" && parts[1] != "is_not" {
		return Filter{}, fieldErr("filter", "filter %q: operator %q, want is or is_not", raw, parts[1])
	}
	if len(parts[2]) > maxFilterValue {
		return Filter{}, fieldErr("filter", "filter on %s: value longer than %d bytes", name, maxFilterValue)
	}
	if !event.Storable(parts[2]) {
		return Filter{}, fieldErr("filter", "filter on %s: value is not UTF-8 text without NUL", name)
	}
	return Filter{Dimension: dim, Op: parts[1], Value: parts[2], dim: d}, nil
}

// propKeyEscaper percent-encodes what a property key in a filter cannot hold as is.
var propKeyEscaper = strings.NewReplacer("%", "%25", ":", "%3A")

// Canonical is the query's view as a stable string: equal views give equal strings, so
// live streams of one view share one computation. It holds every parameter ParseQuery
// reads, the defaults spelled out, so it parses back to q whatever the caller's defaults:
// a parameter left out would make views that differ share one key, and their streams
// each other's figures.
func (q Query) Canonical() string {
	v := url.Values{}
	v.Set("period", q.Period.Name)
	if q.Period.Name == "custom" {
		v.Set("from", q.Period.From.In(q.Period.Location()).Format(time.DateOnly))
		v.Set("to", q.Period.To.In(q.Period.Location()).AddDate(0, 0, -1).Format(time.DateOnly))
	}
	v.Set("interval", q.Period.Interval)
	for _, f := range q.Filters {
		v.Add("filter", f.Dimension+":"+f.Op+":"+f.Value)
	}
	if len(q.Metrics) > 0 {
		v.Set("metrics", strings.Join(q.Metrics, ","))
	}
	v.Set("compare", map[bool]string{false: "none", true: "previous"}[q.Compare])
	v.Set("limit", strconv.Itoa(q.Limit))
	v.Set("page", strconv.Itoa(q.Page))
	return v.Encode()
}

// rollupable reports whether rollups answer q: no filters, whole local days.
func (q Query) rollupable() bool {
	return !q.Raw && len(q.Filters) == 0 && q.Period.DayAligned()
}
