// Package stats answers questions about a site's traffic for a period.
package stats

import (
	"context"
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
}

// ParsePeriod resolves a named period at now in loc. Days start at local midnight.
func ParsePeriod(name string, now time.Time, loc *time.Location) (Period, error) {
	now = now.In(loc)
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, loc)
	p := Period{Name: name, Timezone: loc.String()}
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
	Events   int64 `json:"events"`
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

const summarySQL = `
SELECT coalesce(sum(pageviews), 0), coalesce(sum(visitors), 0), coalesce(sum(events), 0)
FROM (
    SELECT count(*) FILTER (WHERE name = 'pageview') AS pageviews,
           count(DISTINCT visitor_id)                AS visitors,
           count(*)                                  AS events
    FROM events
    WHERE site_id = $1 AND ts >= $2 AND ts < $3
    GROUP BY (ts AT TIME ZONE $4)::date
) per_day`

// Summary returns the headline figures of site for p.
func (q *Querier) Summary(ctx context.Context, site int64, p Period) (Summary, error) {
	var s Summary
	if err := q.pool.QueryRow(ctx, summarySQL, site, p.From, p.To, p.Timezone).Scan(&s.Pageviews, &s.Visitors, &s.Events); err != nil {
		return Summary{}, fmt.Errorf("summary: %w", err)
	}
	return s, nil
}
