package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgutil"
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
	zones map[int64]*time.Location
}

func prepare(w work) *prepared {
	d := newDays(w)
	return &prepared{days: d, tally: d.tally(), spans: newVisitSpans(w.visits, d.visitorDays), zones: w.zones}
}

// apply updates rollup_dims, rollup_hourly, visits (with the visitors' first sightings)
// and rollup_visits for w in tx, whose visitors the caller holds (a writer by their locks, a
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
	return s.writeRollups(ctx, tx, p, st, vp, nil)
}

// noJoinsOverTables are the settings of every transaction that reads or writes
// rollups: each statement joins a batch's keys to big tables, by index lookups per key,
// never a hash join over a whole table, however the table's statistics drift.
var noJoinsOverTables = []string{`SET LOCAL enable_hashjoin = off`, `SET LOCAL enable_mergejoin = off`}

// readState reads in tx, in one pipelined round trip, the state the rollups of p depend
// on: the stored visits of the batch's visitors that its events may join or that hold
// their sightings of the batch's days, and the property values known. The visits' changes are planned as soon as the stored visits arrive,
// while Postgres still reads the rest.
func (s *Store) readState(ctx context.Context, tx pgx.Tx, w work, p *prepared) (readState, visitPlan, error) {
	d, v := p.days, p.spans
	st := readState{}
	b := &pgx.Batch{}
	for _, q := range noJoinsOverTables {
		b.Queue(q)
	}
	var vp visitPlan
	if len(v.keys) > 0 {
		b.Queue(s.q.readVisits, v.args(w.zones)...).Query(func(rows pgx.Rows) error {
			stored, err := scanVisits(rows)
			if err != nil {
				return err
			}
			st.read(stored)
			vp = planVisits(st.taken, w.visits, w.zones)
			return nil
		})
	}
	if len(d.props) > 0 {
		groups, of := d.propGroups()
		b.Queue(s.q.readProps, propGroupArgs(groups)...).Query(func(rows pgx.Rows) (err error) {
			st.propKnown, st.propUsed, err = d.readProps(rows, groups, of)
			return err
		})
	}
	if err := s.run(ctx, tx, "read rollup state", b); err != nil {
		return readState{}, visitPlan{}, err
	}
	return st, vp, nil
}

// writeRollups writes what apply computed. Postgres removes the visits merged away and
// writes the visits' rollups while Go aggregates the dimensions and first sightings;
// then the changed visits are rewritten and the new ones inserted by COPY, each visitor's
// first sightings on one of them, and a second pipeline writes the dimensions.
//
// The COPY is a plain insert: a fresh visit's key is none of the stored visits read
// (replaceVisits), and the visitors' locks, held since that read, keep other writers
// from adding one meanwhile. Should one exist after all, the unique violation fails the
// batch for a retry (IsDataError), never a dead letter.
//
// agg is the dimensions' aggregate if the caller has it already (a side read computes it
// while the events insert); for nil, Go computes it while Postgres writes the visits.
func (s *Store) writeRollups(ctx context.Context, tx pgx.Tx, p *prepared, st readState, vp visitPlan, agg *aggregated) (err error) {
	ctx, span := s.tracer.Start(ctx, "write rollups")
	defer func() { endSpan(span, err) }()
	ahead := make(chan aggregated, 1)
	if agg != nil {
		ahead <- *agg
	} else {
		go func() { ahead <- aggregate(p, st) }()
	}
	pl, err := startPipeline(ctx, tx, s.q.deleteVisits, s.q.updateVisits, s.q.writeVisitRollups, s.q.dropEmptyVisitRollups)
	if err != nil {
		return fmt.Errorf("write visits: %w", err)
	}
	if len(vp.gone) > 0 {
		pl.send(s.q.deleteVisits, visitKeyArgs(vp.gone)...)
	}
	if len(vp.delta.site) > 0 {
		pl.send(s.q.writeVisitRollups, vp.delta.args()...)
		if drop := vp.delta.decreased(); len(drop.site) > 0 {
			pl.send(s.q.dropEmptyVisitRollups, drop.keyArgs()...)
		}
	}
	pl.flush()
	a := <-ahead
	vp.place(a.added, st, p.zones)
	if len(vp.changed) > 0 {
		pl.send(s.q.updateVisits, visitArgs(vp.changed)...)
	}
	if err := pl.close(); err != nil {
		return fmt.Errorf("write visits: %w", err)
	}
	if len(vp.fresh) > 0 {
		if _, err := pgutil.CopyFrom(ctx, tx.Conn().PgConn(), "visits", visitColumns, len(vp.fresh), copyVisit(vp.fresh)); err != nil {
			return fmt.Errorf("insert visits: %w", err)
		}
	}
	pl, err = startPipeline(ctx, tx, s.q.writeDims, s.q.writeHourly)
	if err != nil {
		return fmt.Errorf("write rollups: %w", err)
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

// aggregated are a batch's rows of rollup_dims and rollup_hourly, and its visitors' first
// sightings to store on their visits.
type aggregated struct {
	dims  dimRows
	hours hourRows
	added map[siteVisitor][]int64
}

func aggregate(p *prepared, st readState) aggregated {
	var a aggregated
	a.dims, a.hours, a.added = p.days.aggregate(p.tally, st)
	return a
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
	taken []visit // the stored visits new events may join
	// seen is each visitor's sightings on the visits read, sorted: all it has of the
	// batch's days.
	seen map[siteVisitor][]int64
	// stored are the visits read, by visitor.
	stored    map[siteVisitor][]*visit
	propKnown []bool
	propUsed  []int64
}

// read takes in the stored visits read_visits.sql returned.
func (st *readState) read(stored []visit) {
	st.seen, st.stored = map[siteVisitor][]int64{}, map[siteVisitor][]*visit{}
	for i := range stored {
		v := &stored[i]
		k := siteVisitor{v.site, v.visitor}
		if v.near {
			st.taken = append(st.taken, *v)
		}
		st.stored[k] = append(st.stored[k], v)
		if hs, ok := st.seen[k]; ok {
			st.seen[k] = append(hs[:len(hs):len(hs)], v.seen...) // a copy: v.seen stays v's
		} else {
			st.seen[k] = v.seen // sorted in place below: the order of a visit's set is free
		}
	}
	for _, hs := range st.seen {
		slices.Sort(hs)
	}
}

// place puts each visitor's new first sightings (added), and those of its visits merged
// away, on its visits: each on a visit overlapping the local day it is tagged with, or
// the hour after it (an hour's sighting is tagged with the day the hour starts), which
// the events that made it lie in. That is where the next batches look for them
// (dayWindow), and where retention finds them. A visit the batch writes anyway is
// preferred, a new one first; else a stored one is rewritten with them.
func (vp *visitPlan) place(added map[siteVisitor][]int64, st readState, zones map[int64]*time.Location) {
	for _, g := range vp.gone {
		if len(g.seen) > 0 {
			k := siteVisitor{g.site, g.visitor}
			added[k] = append(added[k], g.seen...)
		}
	}
	if len(added) == 0 {
		return
	}
	// The visits written, by visitor, new ones first: pointers into fresh and changed,
	// which grow only after the last is used.
	written := make(map[siteVisitor][]*visit, len(added))
	for _, vs := range [][]visit{vp.fresh, vp.changed} {
		for i := range vs {
			k := siteVisitor{vs[i].site, vs[i].visitor}
			if _, ok := added[k]; ok {
				written[k] = append(written[k], &vs[i])
			}
		}
	}
	// The stored visits neither merged away nor written, for sightings no written visit
	// is on the day of: rewritten as they are, with them (extra).
	var skip map[visitKey]bool
	var extra []visit
	extraAt := map[visitKey]int{}
	onStored := func(k siteVisitor, lo, hi time.Time) *visit {
		if skip == nil {
			skip = make(map[visitKey]bool, len(vp.gone)+len(vp.fresh)+len(vp.changed))
			for _, vs := range [][]visit{vp.gone, vp.fresh, vp.changed} {
				for i := range vs {
					skip[vs[i].key()] = true
				}
			}
		}
		var first *visit
		for _, v := range st.stored[k] {
			if key := v.key(); !skip[key] {
				if first == nil {
					first = v
				}
				if !v.end.Before(lo) && v.start.Before(hi) {
					first = v
					break
				}
			}
		}
		if first == nil {
			return nil
		}
		key := first.key()
		i, ok := extraAt[key]
		if !ok {
			i = len(extra)
			extraAt[key] = i
			e := *first
			e.add = nil
			extra = append(extra, e)
		}
		return &extra[i]
	}
	keys := make([]siteVisitor, 0, len(added))
	for k := range added {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b siteVisitor) int {
		return cmp.Or(cmp.Compare(a.site, b.site), cmp.Compare(a.visitor, b.visitor))
	})
	for _, k := range keys {
		hs, ws, stored := added[k], written[k], st.stored[k]
		if len(ws) == 1 && (len(stored) == 0 || len(stored) == 1 && stored[0].key() == ws[0].key()) {
			// The common case: the visitor has one visit, new or stored, to hold them all.
			ws[0].add = append(ws[0].add, hs...)
			continue
		}
		if len(ws) == 0 && len(stored) == 0 {
			// No visit of the visitor near these days: only a rebuild's hour past its
			// range meets one, in raw events loaded without visits (the seeder), which
			// the rebuild of the next days gives visits. The hour is counted by this
			// rebuild; its sighting is not kept, as no later event but a rebuild's can
			// fall in it, and a rebuild counts its hours afresh.
			continue
		}
		// Any of the visitor's visits is a day near all its sightings to read tags by.
		var day0 int32
		if len(ws) > 0 {
			day0 = ws[0].day
		} else {
			day0 = stored[0].day
		}
		loc := zones[k.site]
		var on *visit
		onDay, lastDay := int32(0), false
		for _, h := range hs {
			day := dayOfTag(uint16(h), day0)
			if !lastDay || day != onDay {
				onDay, lastDay = day, true
				lo, hi := startOfDay(day, loc), startOfDay(day+1, loc).Add(time.Hour)
				on = nil
				for _, v := range ws {
					if !v.end.Before(lo) && v.start.Before(hi) {
						on = v
						break
					}
				}
				if on == nil {
					on = onStored(k, lo, hi)
				}
				if on == nil {
					on = ws[0] // ws is not empty: onStored finds none only when a visit is written
				}
			}
			on.add = append(on.add, h)
		}
	}
	vp.changed = append(vp.changed, extra...)
}

// dayOfTag is the day tagged tag nearest ref.
func dayOfTag(tag uint16, ref int32) int32 { return ref + int32(int16(tag-uint16(ref))) }

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
