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
	"slices"
	"sort"
	"sync"
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
	insertEvents, lockSites, lockVisitors, readVisits, readProps     string
	writeHourly, writeDims, writeVisitRollups, dropEmptyVisitRollups string
	updateVisits, deleteVisits                                       string
}

func loadQueries() queries {
	return queries{
		insertEvents:          query("insert_events"),
		lockSites:             query("lock_sites"),
		lockVisitors:          query("lock_visitors"),
		readVisits:            query("read_visits"),
		updateVisits:          query("update_visits"),
		deleteVisits:          query("delete_visits"),
		readProps:             query("read_props"),
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
	// prunedBefore is the day PruneSeen last pruned up to.
	pruneMu      sync.Mutex
	prunedBefore time.Time
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
	// Inserted counts new rows. The rest of the batch were Duplicates (stored before, by
	// an earlier delivery, or repeated within the batch), SiteDeleted (events of sites
	// that no longer exist, dropped) or DeadLettered.
	Inserted int
	// DeadLettered counts events Postgres refused for a data reason, newly stored in
	// dead_letters; one dead-lettered by an earlier delivery counts as a duplicate.
	DeadLettered int
	Duplicates   int
	SiteDeleted  int
	Sites        []SiteChange
}

func (r *Result) merge(o Result) {
	r.Inserted += o.Inserted
	r.DeadLettered += o.DeadLettered
	r.Duplicates += o.Duplicates
	r.SiteDeleted += o.SiteDeleted
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
// the rest is stored. Any other error (Postgres unavailable, a deadlock) is for the caller
// to retry the whole batch; it comes with what the parts of a split batch committed
// before it, which a retry finds stored and counts as duplicates, so only this result
// can announce and count them.
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
			if err := s.deadLetter(ctx, &batch[i], "screen size out of range", &out); err != nil {
				return out, err
			}
		}
		r, err := s.Write(ctx, keep)
		out.merge(r)
		return out, err
	}
	res, err := s.writeTx(ctx, batch)
	if err == nil || !IsDataError(err) {
		return res, err
	}
	if len(batch) == 1 {
		err := s.deadLetter(ctx, &batch[0], err.Error(), &out)
		return out, err
	}
	mid := len(batch) / 2
	for _, half := range [][]event.Event{batch[:mid], batch[mid:]} {
		r, err := s.Write(ctx, half)
		out.merge(r)
		if err != nil {
			return out, err
		}
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
// 23) or an event exceeded one of its limits (class 54, such as 54000 for a path too
// long for the index of events by path): retrying cannot help, so the offending event is
// isolated instead. A limit a whole batch exceeds splits it until the parts fit. A unique
// violation is the exception: the events' COPY falls back to an insert that skips stored
// events and dead letters skip conflicts, so one can only come from a visit another
// transaction wrote meanwhile, which a retry reads and merges.
func IsDataError(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || len(pgErr.Code) < 2 || isUniqueViolation(err) {
		return false
	}
	class := pgErr.Code[:2]
	return class == "22" || class == "23" || class == "54"
}

// isUniqueViolation reports whether Postgres refused a row for a key already stored.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == pgerrcode.UniqueViolation
}

const insertDeadLetter = `
INSERT INTO dead_letters (id, site_id, event, reason) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO NOTHING`

// deadLetter stores e in dead_letters and counts it in res: as dead-lettered, or as a
// duplicate when an earlier delivery of it is already there.
func (s *Store) deadLetter(ctx context.Context, e *event.Event, reason string, res *Result) error {
	b, err := event.Encode(e)
	if err != nil {
		return err
	}
	tag, err := s.pool.Exec(ctx, insertDeadLetter, e.ID, e.SiteID, string(b), reason)
	if err != nil {
		return fmt.Errorf("store dead letter: %w", err)
	}
	if tag.RowsAffected() == 0 {
		res.Duplicates++
	} else {
		res.DeadLettered++
	}
	return nil
}

// EnsureAhead creates the partitions of the months from..to, so ingest-time events never
// wait on DDL.
func (s *Store) EnsureAhead(ctx context.Context, from, to time.Time) error {
	return s.ensureRange(ctx, from, to)
}

// ensurePartitions makes sure every month the batch has events in has its partition:
// events from history or a skewed clock still land. Only those months: one event of
// year 1000 beside today's must not ask for the twelve thousand months between, whose
// partitions one transaction cannot even lock. It asks Postgres every batch rather than
// trusting a cache, because retention on another replica may have dropped a month.
func (s *Store) ensurePartitions(ctx context.Context, batch []event.Event) error {
	months := make([]time.Time, 0, 2)
	for i := range batch {
		if m := monthOf(batch[i].Time); !slices.ContainsFunc(months, m.Equal) {
			months = append(months, m)
		}
	}
	// In order, so writers creating the same months lock them in one order.
	slices.SortFunc(months, time.Time.Compare)
	if _, err := s.pool.Exec(ctx, ensureMonths, months); err != nil {
		return fmt.Errorf("ensure partitions: %w", err)
	}
	return nil
}

const ensureMonths = `SELECT ensure_event_partitions(m, m) FROM unnest($1::timestamptz[]) m`

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

// PruneSeen forgets the first sightings tagged with a day before cutoff's, less a day:
// once raw events are gone no rebuild needs them, and a straggler older than cutoff
// would then count its visitor again, which retention accepts. They are kept on visits of
// their own day (place), so only visits that started before that day are looked at:
// all of them the first time, then those of the last days.
func (s *Store) PruneSeen(ctx context.Context, cutoff time.Time) error {
	day := time.Date(cutoff.Year(), cutoff.Month(), cutoff.Day(), 0, 0, 0, 0, time.UTC).AddDate(0, 0, -1)
	s.pruneMu.Lock()
	defer s.pruneMu.Unlock()
	from := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	if !s.prunedBefore.IsZero() {
		from = s.prunedBefore.AddDate(0, 0, -2)
	}
	if _, err := s.pool.Exec(ctx, pruneSeen, day, from, int32(uint16(day.Unix()/86400))); err != nil {
		return fmt.Errorf("prune first sightings: %w", err)
	}
	s.prunedBefore = day
	return nil
}

// pruneSeen keeps the sightings tagged $3 or later (modulo 2^16: up to 89 years later) of
// the visits that started in [$2, $1).
const pruneSeen = `
UPDATE visits v SET seen = ARRAY(SELECT h FROM unnest(v.seen) h WHERE ((h & 65535) - $3) & 65535 < 32768)
WHERE v.day < $1 AND v.day >= $2
  AND EXISTS (SELECT 1 FROM unnest(v.seen) h WHERE ((h & 65535) - $3) & 65535 >= 32768)`
