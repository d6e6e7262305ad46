package store

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
)

// work is what apply adds to the rollups: events newly stored (or, in a rebuild, replayed)
// that feed the daily dimensions, the hourly rollup and the visits. A write passes the
// same events for all three; a rebuild passes each the events of its own range.
type work struct {
	zones               map[int64]*time.Location
	dims, hours, visits []*event.Event
	// pre, when set, is prepare(w) computed ahead (while the events insert ran).
	pre *prepared
}

// prepared is the Go work of apply that needs nothing read from Postgres.
type prepared struct {
	days  *days
	tally *tally
	spans visitSpans
}

func prepare(w work) *prepared {
	d := newDays(w)
	return &prepared{days: d, tally: d.tally(), spans: newVisitSpans(w.visits)}
}

// apply updates visitor_days, rollup_dims, rollup_hourly, visits and
// rollup_visits for w in tx, whose visitors the caller holds (a writer by their locks, a
// rebuild by its site's): one pipelined round trip reads what the rollups depend on
// (first sightings, stored visits, property values), Go computes every change, and one
// pipeline writes them as pre-aggregated rows.
func (s *Store) apply(ctx context.Context, tx pgx.Tx, w work) error {
	ctx, span := s.tracer.Start(ctx, "rollups")
	defer span.End()
	p := w.pre
	if p == nil {
		p = prepare(w)
	}
	st, vp, err := s.readState(ctx, tx, w, p)
	if err != nil {
		return err
	}
	return s.writeRollups(ctx, tx, p, st, vp)
}

// noJoinsOverTables are the settings of every transaction that reads or writes
// rollups: each statement joins a batch's keys to big tables, by index lookups per key,
// never a hash join over a whole table, however the table's statistics drift.
var noJoinsOverTables = []string{`SET LOCAL enable_hashjoin = off`, `SET LOCAL enable_mergejoin = off`}

// readState reads in tx, in one pipelined round trip, the state the rollups of p depend
// on. The visits' changes are
// planned as soon as the stored visits arrive, while Postgres still reads the rest.
func (s *Store) readState(ctx context.Context, tx pgx.Tx, w work, p *prepared) (readState, visitPlan, error) {
	d, v := p.days, p.spans
	st := readState{}
	b := &pgx.Batch{}
	for _, q := range noJoinsOverTables {
		b.Queue(q)
	}
	var vp visitPlan
	if len(v.keys) > 0 {
		b.Queue(s.q.readVisits, v.args()...).Query(func(rows pgx.Rows) error {
			var err error
			st.taken, err = scanVisits(rows)
			if err == nil {
				vp = planVisits(st.taken, w.visits, w.zones)
			}
			return err
		})
	}
	if len(d.visitorDays) > 0 {
		b.Queue(s.q.readSeen, d.seenArgs()...).Query(func(rows pgx.Rows) error {
			st.seen, st.stored = make([][]int64, len(d.visitorDays)), make([]bool, len(d.visitorDays))
			var i int64
			var seen []int64
			_, err := pgx.ForEachRow(rows, []any{&i, &seen}, func() error {
				st.seen[i-1], st.stored[i-1] = seen, true
				seen = nil
				return nil
			})
			return err
		})
	}
	if len(d.props) > 0 {
		b.Queue(s.q.readProps, d.propArgs()...).Query(func(rows pgx.Rows) error {
			st.propKnown, st.propUsed = make([]bool, len(d.props)), make([]int64, len(d.props))
			var i, used int64
			var known bool
			_, err := pgx.ForEachRow(rows, []any{&i, &known, &used}, func() error {
				st.propKnown[i-1], st.propUsed[i-1] = known, used
				return nil
			})
			return err
		})
	}
	if err := s.run(ctx, tx, "read rollup state", b); err != nil {
		return readState{}, visitPlan{}, err
	}
	return st, vp, nil
}

// writeRollups writes what apply computed. Go aggregates the dimensions and first
// sightings while Postgres writes the visits: their changes in one pipeline, then the
// visits that start anew by COPY. The first sightings of new visitor-days follow by COPY,
// and the rest in a second pipeline.
//
// Both COPYs are plain inserts: a fresh visit's key is none of the stored visits read
// (replaceVisits), and a new visitor-day was read as absent; the visitors' locks, held
// since those reads, keep other writers from adding either meanwhile. Should one exist
// after all, the unique violation fails the batch for a retry (IsDataError), never a
// dead letter.
func (s *Store) writeRollups(ctx context.Context, tx pgx.Tx, p *prepared, st readState, vp visitPlan) (err error) {
	ctx, span := s.tracer.Start(ctx, "write rollups")
	defer func() { endSpan(span, err) }()
	type aggregated struct {
		dims  dimRows
		hours hourRows
		seen  seenRows
	}
	ahead := make(chan aggregated, 1)
	go func() {
		var a aggregated
		a.dims, a.hours, a.seen = p.days.aggregate(p.tally, st)
		ahead <- a
	}()
	if len(p.spans.keys) > 0 {
		pl, err := startPipeline(ctx, tx, s.q.deleteVisits, s.q.updateVisits, s.q.writeVisitRollups, s.q.dropEmptyVisitRollups)
		if err != nil {
			return fmt.Errorf("write visits: %w", err)
		}
		if len(vp.gone) > 0 {
			pl.send(s.q.deleteVisits, visitKeyArgs(vp.gone)...)
		}
		if len(vp.changed) > 0 {
			pl.send(s.q.updateVisits, visitArgs(vp.changed)...)
		}
		if len(vp.delta.site) > 0 {
			pl.send(s.q.writeVisitRollups, vp.delta.args()...)
			if drop := vp.delta.decreased(); len(drop.site) > 0 {
				pl.send(s.q.dropEmptyVisitRollups, drop.keyArgs()...)
			}
		}
		if err := pl.close(); err != nil {
			return fmt.Errorf("write visits: %w", err)
		}
		if len(vp.fresh) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"visits"}, visitColumns, visitSource(vp.fresh)); err != nil {
				return fmt.Errorf("insert visits: %w", err)
			}
		}
	}
	a := <-ahead
	if len(a.seen.insert.keys) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"visitor_days"}, seenColumns, a.seen.insert.source()); err != nil {
			return fmt.Errorf("insert visitor days: %w", err)
		}
	}
	pl, err := startPipeline(ctx, tx, s.q.updateSeen, s.q.writeDims, s.q.writeHourly)
	if err != nil {
		return fmt.Errorf("write rollups: %w", err)
	}
	if len(a.seen.update.keys) > 0 {
		pl.send(s.q.updateSeen, a.seen.update.args()...)
	}
	if len(a.dims.site) > 0 {
		pl.send(s.q.writeDims, a.dims.args()...)
	}
	if len(a.hours.site) > 0 {
		pl.send(s.q.writeHourly, a.hours.args()...)
	}
	if err := pl.close(); err != nil {
		return fmt.Errorf("write rollups: %w", err)
	}
	return nil
}

// visitPlan is how a batch changes visits: the stored visits taken that merged away
// (gone) or changed in place, the ones to insert, and the net change to rollup_visits.
type visitPlan struct {
	gone, changed, fresh []visit
	delta                visitRows
}

func planVisits(taken []visit, evs []*event.Event, zones map[int64]*time.Location) visitPlan {
	merged := mergeVisits(taken, evs, zones)
	var p visitPlan
	p.gone, p.changed, p.fresh = replaceVisits(taken, merged)
	p.delta = visitDeltas(taken, merged)
	return p
}

// run sends b as one pipelined round trip.
func (s *Store) run(ctx context.Context, tx pgx.Tx, what string, b *pgx.Batch) error {
	if b.Len() == 0 {
		return nil
	}
	ctx, span := s.tracer.Start(ctx, what)
	defer span.End()
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		span.RecordError(err)
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// readState is what apply reads before computing.
type readState struct {
	taken     []visit
	seen      [][]int64 // by visitor-day
	stored    []bool    // by visitor-day: whether visitor_days has its row
	propKnown []bool
	propUsed  []int64
}

// visitorLockBuckets is how many locks visitors share. One lock per visitor would take
// a lock-table entry per visitor of a batch, and Postgres's table holds only
// max_locks_per_transaction x max_connections entries (6,400 by default) for everyone:
// four writers with 5,000-event batches would run it out. Sharing buckets bounds a batch
// to this many; writers of the same buckets then take turns, which they already do at the
// shared rollup rows.
const visitorLockBuckets = 1024

// lockKeys are the sorted lock buckets of every (site, visitor) in the events.
func lockKeys(lists ...[]*event.Event) []int32 {
	var used [visitorLockBuckets]bool
	for _, l := range lists {
		for _, e := range l {
			h := hashTextExtended(strconv.FormatInt(e.SiteID, 10)+":"+strconv.FormatInt(e.Visitor, 10), 1751220853)
			used[uint64(h)%visitorLockBuckets] = true
		}
	}
	var keys []int32
	for i, u := range used {
		if u {
			keys = append(keys, int32(i))
		}
	}
	return keys
}

// zones caches loaded time zones by name.
type zones struct {
	mu   sync.Mutex
	byID map[string]*time.Location
}

func newZones() *zones { return &zones{byID: map[string]*time.Location{}} }

func (z *zones) load(name string) (*time.Location, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if loc, ok := z.byID[name]; ok {
		return loc, nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("time zone %q: %w", name, err)
	}
	z.byID[name] = loc
	return loc, nil
}

// dayOf is t's date in loc as days since 1970-01-01.
func dayOf(t time.Time, loc *time.Location) int32 {
	y, m, d := t.In(loc).Date()
	return int32(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// dateOf is the date day names, for a date parameter.
func dateOf(day int32) time.Time { return time.Unix(int64(day)*86400, 0).UTC() }
