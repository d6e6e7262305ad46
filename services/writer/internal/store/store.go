// Package store writes batches of events to Postgres in one transaction each: COPY into
// a staging table, then one set-based insert that skips events already stored, and the
// rollups fed by exactly the rows that insert stored, so a redelivered event changes
// nothing.
package store

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/haru-analytics/haru/pkg/event"
)

//go:embed sql/*.sql
var sqlFS embed.FS

// query returns the embedded SQL file name; a missing file is a build mistake.
func query(name string) string {
	b, err := sqlFS.ReadFile("sql/" + name + ".sql")
	if err != nil {
		panic(fmt.Sprintf("store: missing sql/%s.sql", name))
	}
	return string(b)
}

// queries are the embedded SQL, loaded once by name.
type queries struct {
	insertEvents, lockSites, lockVisitors, readVisits, readSeen, readProps       string
	updateSeen, writeHourly, writeDims, writeVisitRollups, dropEmptyVisitRollups string
	updateVisits, deleteVisits                                                   string
}

func loadQueries() queries {
	return queries{
		insertEvents:          query("insert_events"),
		lockSites:             query("lock_sites"),
		lockVisitors:          query("lock_visitors"),
		readVisits:            query("read_visits"),
		updateVisits:          query("update_visits"),
		deleteVisits:          query("delete_visits"),
		readSeen:              query("read_seen"),
		readProps:             query("read_props"),
		updateSeen:            query("update_seen"),
		writeHourly:           query("write_hourly"),
		writeDims:             query("write_dims"),
		writeVisitRollups:     query("write_visit_rollups"),
		dropEmptyVisitRollups: query("drop_empty_visit_rollups"),
	}
}

// DefaultBatchSize is how many events a writer batch holds at most by default. The
// rollups' rows grow slower than the events they count (a batch's pageviews of one page
// and day are one row), so the larger the batch, the less each event costs them:
// BenchmarkWriteSizes measures it. Memory bounds it: a batch is held twice at once
// (written, and pulled ahead), at about 4 KiB an event.
const DefaultBatchSize = 10000

// Store writes event batches.
type Store struct {
	pool   *pgxpool.Pool
	q      queries
	tracer trace.Tracer
	zones  *zones
	// pairs bounds the batches writing at once to half the pool: each holds two
	// connections (see sideRead). Nil for a pool of one, whose batches read in their
	// own transaction.
	pairs chan struct{}
}

// Option configures a Store.
type Option func(*Store)

// WithTracerProvider traces each batch write and its steps with tp.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *Store) { s.tracer = tp.Tracer("haru/writer/store") }
}

// New returns a store writing through pool.
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	if pool == nil {
		return nil, errors.New("store: nil pool")
	}
	s := &Store{pool: pool, q: loadQueries(), tracer: noop.NewTracerProvider().Tracer(""), zones: newZones()}
	if n := pool.Config().MaxConns / 2; n >= 1 {
		s.pairs = make(chan struct{}, n)
	}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// SiteChange summarises what one batch stored for one site.
type SiteChange struct {
	SiteID   int64
	Inserted int
	From, To time.Time
}

// Result is what a committed batch did.
type Result struct {
	// Inserted counts new rows; the rest of the batch were duplicates, events of deleted
	// sites or dead letters.
	Inserted int
	// DeadLettered counts events Postgres refused for a data reason, now in dead_letters.
	DeadLettered int
	Sites        []SiteChange
}

func (r *Result) merge(o Result) {
	r.Inserted += o.Inserted
	r.DeadLettered += o.DeadLettered
	for _, sc := range o.Sites {
		found := false
		for i := range r.Sites {
			if r.Sites[i].SiteID != sc.SiteID {
				continue
			}
			found = true
			r.Sites[i].Inserted += sc.Inserted
			if sc.From.Before(r.Sites[i].From) {
				r.Sites[i].From = sc.From
			}
			if sc.To.After(r.Sites[i].To) {
				r.Sites[i].To = sc.To
			}
		}
		if !found {
			r.Sites = append(r.Sites, sc)
		}
	}
}

// Write stores batch and reports what was new. A batch Postgres refuses for a data reason
// is split in halves until the refused events are isolated; those go to dead_letters and
// the rest is stored. Any other error (Postgres unavailable, a deadlock) returns with
// nothing stored, for the caller to retry the whole batch.
func (s *Store) Write(ctx context.Context, batch []event.Event) (Result, error) {
	if len(batch) == 0 {
		return Result{}, nil
	}
	// A screen size beyond int4 fails in the client's COPY encoding, not in Postgres,
	// so it would be retried forever: set such events aside here.
	var out Result
	if bad := outOfRange(batch); len(bad) > 0 {
		keep := make([]event.Event, 0, len(batch)-len(bad))
		for i := range batch {
			if !bad[i] {
				keep = append(keep, batch[i])
				continue
			}
			if err := s.deadLetter(ctx, &batch[i], "screen size out of range"); err != nil {
				return Result{}, err
			}
			out.DeadLettered++
		}
		r, err := s.Write(ctx, keep)
		if err != nil {
			return Result{}, err
		}
		out.merge(r)
		return out, nil
	}
	res, err := s.writeTx(ctx, batch)
	if err == nil || !IsDataError(err) {
		return res, err
	}
	if len(batch) == 1 {
		if err := s.deadLetter(ctx, &batch[0], err.Error()); err != nil {
			return Result{}, err
		}
		return Result{DeadLettered: 1}, nil
	}
	mid := len(batch) / 2
	for _, half := range [][]event.Event{batch[:mid], batch[mid:]} {
		r, err := s.Write(ctx, half)
		if err != nil {
			// The half written first stays written; a retry finds it already stored.
			return Result{}, err
		}
		out.merge(r)
	}
	return out, nil
}

func outOfRange(batch []event.Event) map[int]bool {
	var bad map[int]bool
	for i := range batch {
		if batch[i].ScreenW > math.MaxInt32 || batch[i].ScreenH > math.MaxInt32 {
			if bad == nil {
				bad = map[int]bool{}
			}
			bad[i] = true
		}
	}
	return bad
}

// IsDataError reports whether Postgres refused the data itself (SQLSTATE classes 22 and
// 23): retrying cannot help, so the offending event is isolated instead. A unique
// violation is the exception: the events' COPY falls back to an insert that skips stored
// events and dead letters skip conflicts, so one can only come from a visit or
// visitor-day row another transaction wrote meanwhile, which a retry reads and merges.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 || isUniqueViolation(err) {
		return false
	}
	class := pgErr.Code[:2]
	return class == "22" || class == "23"
}

// isUniqueViolation reports whether Postgres refused a row for a key already stored.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation
}

const insertDeadLetter = `
INSERT INTO dead_letters (id, site_id, event, reason) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING`

func (s *Store) deadLetter(ctx context.Context, e *event.Event, reason string) error {
	b, err := event.Encode(e)
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, insertDeadLetter, e.ID, e.SiteID, string(b), reason); err != nil {
		return fmt.Errorf("store dead letter: %w", err)
	}
	return nil
}

// EnsureAhead creates the partitions of the months from..to, so ingest-time events never
// wait on DDL.
func (s *Store) EnsureAhead(ctx context.Context, from, to time.Time) error {
	return s.ensureRange(ctx, from, to)
}

// ensurePartitions makes sure every month the batch touches has its partition: events
// from history or a skewed clock still land. It asks Postgres every batch rather than
// trusting a cache, because retention on another replica may have dropped a month.
func (s *Store) ensurePartitions(ctx context.Context, batch []event.Event) error {
	lo, hi := batch[0].Time, batch[0].Time
	for i := range batch {
		t := batch[i].Time
		if t.Before(lo) {
			lo = t
		}
		if t.After(hi) {
			hi = t
		}
	}
	return s.ensureRange(ctx, lo, hi)
}

func (s *Store) ensureRange(ctx context.Context, lo, hi time.Time) error {
	if _, err := s.pool.Exec(ctx, `SELECT ensure_event_partitions($1, $2)`, lo, hi); err != nil {
		return fmt.Errorf("ensure partitions: %w", err)
	}
	return nil
}

func monthOf(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

const listPartitions = `
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'events'::regclass`

// DropPartitionsBefore drops every monthly raw-event partition that ends at or before
// cutoff and returns their names. Rollups are kept.
func (s *Store) DropPartitionsBefore(ctx context.Context, cutoff time.Time) ([]string, error) {
	r, err := s.pool.Query(ctx, listPartitions)
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	names, err := pgx.CollectRows(r, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list partitions: %w", err)
	}
	sort.Strings(names)
	var dropped []string
	for _, name := range names {
		var y, m int
		if n, _ := fmt.Sscanf(name, "events_y%4dm%2d", &y, &m); n != 2 {
			continue
		}
		end := time.Date(y, time.Month(m)+1, 1, 0, 0, 0, 0, time.UTC)
		if end.After(cutoff) {
			continue
		}
		if _, err := s.pool.Exec(ctx, "DROP TABLE IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			return dropped, fmt.Errorf("drop partition %s: %w", name, err)
		}
		dropped = append(dropped, name)
	}
	return dropped, nil
}

// PruneSeen deletes the first-sighting records (visitor_days) of days
// before cutoff. Once raw events are gone no rebuild needs them; a straggler older than
// cutoff would then count its visitor again, which retention accepts.
func (s *Store) PruneSeen(ctx context.Context, cutoff time.Time) error {
	day := time.Date(cutoff.Year(), cutoff.Month(), cutoff.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	if _, err := s.pool.Exec(ctx, `DELETE FROM visitor_days WHERE day < $1`, day); err != nil {
		return fmt.Errorf("prune visitor days: %w", err)
	}
	return nil
}
