// Package stats answers questions about a site's traffic for a period.
package stats

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// ErrBadPeriod is a period the caller named wrongly.
var ErrBadPeriod = errors.New("bad period")

// Period is the half-open range [From, To) and the name it was asked by.
type Period struct {
	Name     string    `json:"name"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Timezone string    `json:"timezone"`
	loc      *time.Location
}

// ParsePeriod resolves a named period at now in loc. Days start at local midnight.
func ParsePeriod(name string, now time.Time, loc *time.Location) (Period, error) {
	now = now.In(loc)
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	p := Period{Name: name, Timezone: loc.String(), loc: loc}
	switch name {
	case "", "today":
		p.Name, p.From, p.To = "today", midnight, midnight.AddDate(0, 0, 1)
	case "yesterday":
		p.From, p.To = midnight.AddDate(0, 0, -1), midnight
	case "24h":
		p.From, p.To = now.Add(-24*time.Hour), now
	case "7d":
		p.From, p.To = midnight.AddDate(0, 0, -6), midnight.AddDate(0, 0, 1)
	case "30d":
		p.From, p.To = midnight.AddDate(0, 0, -29), midnight.AddDate(0, 0, 1)
	default:
		return Period{}, fmt.Errorf("%w: %q: want today, yesterday, 24h, 7d or 30d", ErrBadPeriod, name)
	}
	return p, nil
}

// Summary is the headline figures of a period.
type Summary struct {
	Pageviews int64 `json:"pageviews"`
	// Visitors adds each local day's unique visitors: visitor ids rotate daily.
	Visitors int64 `json:"visitors"`
	// Events counts custom events (interactions), not pageviews or engagement.
	Events     int64 `json:"events"`
	Visits     int64 `json:"visits"`
	Bounces    int64 `json:"bounces"`
	DurationMS int64 `json:"duration_ms"`
}

// Querier runs stats queries.
type Querier struct {
	pool *pgxpool.Pool
}

// New returns a Querier over pool.
func New(pool *pgxpool.Pool) (*Querier, error) {
	if pool == nil {
		return nil, errors.New("stats: nil pool")
	}
	return &Querier{pool: pool}, nil
}

//go:embed sql/*.sql
var sqlFiles embed.FS

// query returns the embedded SQL file sql/name.sql.
func query(name string) string {
	b, err := sqlFiles.ReadFile("sql/" + name + ".sql")
	if err != nil {
		panic(fmt.Sprintf("stats: missing query %s", name))
	}
	return string(b)
}

var (
	summaryRollup = query("summary_rollup")
	summaryRaw    = query("summary_raw")
)

// DayAligned reports whether p covers whole local days, so rollups answer it.
func (p Period) DayAligned() bool {
	if p.loc == nil {
		return false
	}
	at := func(t time.Time) bool {
		t = t.In(p.loc)
		return t.Hour() == 0 && t.Minute() == 0 && t.Second() == 0 && t.Nanosecond() == 0
	}
	return at(p.From) && at(p.To)
}

// Summary returns the headline figures of site for p: from the rollups when p covers
// whole local days, else (the last 24 hours) from raw events, which then span at most a
// day and a bit.
func (q *Querier) Summary(ctx context.Context, site int64, p Period) (Summary, error) {
	if p.DayAligned() {
		return q.scan(ctx, summaryRollup, site, p.From.In(p.loc).Format(time.DateOnly), p.To.In(p.loc).Format(time.DateOnly))
	}
	return q.SummaryRaw(ctx, site, p)
}

// SummaryRaw computes the headline figures from raw events: the baseline the rollups are
// measured against, and the answer for ranges that are not whole days.
func (q *Querier) SummaryRaw(ctx context.Context, site int64, p Period) (Summary, error) {
	return q.scan(ctx, summaryRaw, site, p.From, p.To, p.Timezone)
}

func (q *Querier) scan(ctx context.Context, sql string, args ...any) (Summary, error) {
	var s Summary
	if err := q.pool.QueryRow(ctx, sql, args...).Scan(&s.Pageviews, &s.Visitors, &s.Events, &s.Visits, &s.Bounces, &s.DurationMS); err != nil {
		return Summary{}, fmt.Errorf("summary: %w", err)
	}
	return s, nil
}
