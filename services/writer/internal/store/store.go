// Package store writes batches of events to Postgres in one transaction each: COPY into
// a staging table, then one set-based insert that skips events already stored, so a
// redelivered event changes nothing.
package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/event"
)

// Store writes event batches.
type Store struct {
	pool *pgxpool.Pool

	mu     sync.Mutex
	months map[time.Time]bool // months whose partition is known to exist
}

// New returns a store writing through pool.
func New(pool *pgxpool.Pool) (*Store, error) {
	if pool == nil {
		return nil, errors.New("store: nil pool")
	}
	return &Store{pool: pool, months: map[time.Time]bool{}}, nil
}

// SiteChange summarises what one batch stored for one site.
type SiteChange struct {
	SiteID   int64
	Inserted int
	From, To time.Time
}

// Result is what a committed batch did.
type Result struct {
	// Inserted counts new rows; the rest of the batch were duplicates or events of
	// deleted sites.
	Inserted int
	Sites    []SiteChange
}

var stagingColumns = []string{
	"site_id", "ts", "id", "name", "visitor_id", "hostname", "path", "referrer", "ref_source",
	"utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
	"country", "region", "browser", "os", "device", "screen_w", "screen_h", "duration_ms", "props",
}

const createStaging = `CREATE TEMP TABLE staging_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DROP`

// insertNew moves staged events into events. Events of sites deleted meanwhile are left
// behind; ON CONFLICT skips events stored before, which is what makes a redelivery a
// no-op. RETURNING reports only rows actually inserted.
const insertNew = `
INSERT INTO events
SELECT s.* FROM staging_events s
WHERE EXISTS (SELECT 1 FROM sites WHERE sites.id = s.site_id)
ON CONFLICT DO NOTHING
RETURNING site_id, ts`

// Write stores batch in one transaction and reports what was new.
func (s *Store) Write(ctx context.Context, batch []event.Event) (Result, error) {
	if len(batch) == 0 {
		return Result{}, nil
	}
	if err := s.ensurePartitions(ctx, batch); err != nil {
		return Result{}, err
	}
	var res Result
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, createStaging); err != nil {
			return fmt.Errorf("create staging: %w", err)
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"staging_events"}, stagingColumns, rows(batch)); err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		r, err := tx.Query(ctx, insertNew)
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		bySite := map[int64]*SiteChange{}
		var site int64
		var ts time.Time
		_, err = pgx.ForEachRow(r, []any{&site, &ts}, func() error {
			sc := bySite[site]
			if sc == nil {
				sc = &SiteChange{SiteID: site, From: ts, To: ts}
				bySite[site] = sc
			}
			sc.Inserted++
			if ts.Before(sc.From) {
				sc.From = ts
			}
			if ts.After(sc.To) {
				sc.To = ts
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("insert events: %w", err)
		}
		res = Result{}
		for _, sc := range bySite {
			res.Inserted += sc.Inserted
			res.Sites = append(res.Sites, *sc)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

func rows(batch []event.Event) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(batch), func(i int) ([]any, error) {
		e := &batch[i]
		var props any
		if len(e.Props) > 0 {
			props = e.Props
		}
		return []any{
			e.SiteID, e.Time, e.ID, e.Name, e.Visitor, e.Hostname, e.Path, e.Referrer, e.RefSource,
			e.UTMSource, e.UTMMedium, e.UTMCampaign, e.UTMTerm, e.UTMContent,
			e.Country, e.Region, e.Browser, e.OS, e.Device, e.ScreenW, e.ScreenH, e.DurationMS, props,
		}, nil
	})
}

// EnsureAhead creates the partitions of the months around now, so ingest-time events
// never wait on DDL.
func (s *Store) EnsureAhead(ctx context.Context, now time.Time) error {
	return s.ensureRange(ctx, now.AddDate(0, -1, 0), now.AddDate(0, 2, 0))
}

// ensurePartitions makes sure every month the batch touches has its partition: events
// from history or a skewed clock still land.
func (s *Store) ensurePartitions(ctx context.Context, batch []event.Event) error {
	lo, hi := batch[0].Time, batch[0].Time
	missing := false
	s.mu.Lock()
	for i := range batch {
		t := batch[i].Time
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
		if !s.months[monthOf(t)] {
			missing = true
		}
	}
	s.mu.Unlock()
	if !missing {
		return nil
	}
	return s.ensureRange(ctx, lo, hi)
}

func (s *Store) ensureRange(ctx context.Context, lo, hi time.Time) error {
	if _, err := s.pool.Exec(ctx, `SELECT ensure_event_partitions($1, $2)`, lo, hi); err != nil {
		return fmt.Errorf("ensure partitions: %w", err)
	}
	s.mu.Lock()
	for m := monthOf(lo); !m.After(monthOf(hi)); m = m.AddDate(0, 1, 0) {
		s.months[m] = true
	}
	s.mu.Unlock()
	return nil
}

func monthOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}
