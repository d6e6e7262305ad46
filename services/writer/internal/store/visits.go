package store

import (
	"cmp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// visitGap ends a visit: a piece starting more than this after the latest end so far
// starts a new one.
const visitGap = 30 * time.Minute

// visit is a row of visits. Entry and exit are the first and last pageview; without a
// pageview they are unset (NULL).
type visit struct {
	site, visitor     int64
	start, end        time.Time
	day               int32
	pageviews, events int32
	engagement        int64
	entry, exit       *string
	entryAt, exitAt   *time.Time
	// seen are the visitor's first sightings this visit holds as stored (visits.seen,
	// tagged hashes), add those the batch appends to it. Each of a visitor's sightings
	// is on exactly one of its visits, one overlapping the sighting's day (place).
	seen, add []int64
	// near: whether new events may join this stored visit (read_visits.sql).
	near bool
}

func (v *visit) bounce() bool { return v.pageviews == 1 && v.events == 0 }

// duration is ended_at - started_at plus engagement, in milliseconds.
func (v *visit) duration() int64 { return v.end.Sub(v.start).Milliseconds() + v.engagement }

type siteVisitor struct{ site, visitor int64 }

// visitSpans are, per visitor of a batch, the window within which stored visits can
// merge with its new events (near), and the local days whose first sightings it may add.
type visitSpans struct {
	keys     []siteVisitor
	lo, hi   []time.Time // the visitor's new events' first and last, if near
	near     []bool
	from, to []int32 // the first and last day of its sightings, if days
	days     []bool
}

func newVisitSpans(evs []*event.Event, vds []visitorDay) visitSpans {
	var s visitSpans
	idx := map[siteVisitor]int{}
	at := func(k siteVisitor) int {
		i, ok := idx[k]
		if !ok {
			i = len(s.keys)
			idx[k] = i
			s.keys = append(s.keys, k)
			s.lo, s.hi, s.near = append(s.lo, time.Time{}), append(s.hi, time.Time{}), append(s.near, false)
			s.from, s.to, s.days = append(s.from, 0), append(s.to, 0), append(s.days, false)
		}
		return i
	}
	for _, e := range evs {
		i := at(siteVisitor{e.SiteID, e.Visitor})
		if !s.near[i] || e.Time.Before(s.lo[i]) {
			s.lo[i] = e.Time
		}
		if !s.near[i] || e.Time.After(s.hi[i]) {
			s.hi[i] = e.Time
		}
		s.near[i] = true
	}
	for _, vd := range vds {
		i := at(siteVisitor{vd.site, vd.visitor})
		if !s.days[i] || vd.day < s.from[i] {
			s.from[i] = vd.day
		}
		if !s.days[i] || vd.day > s.to[i] {
			s.to[i] = vd.day
		}
		s.days[i] = true
	}
	return s
}

// dayWindow is where the visits holding a visitor's sightings of the days from..to lie:
// each sighting is on a visit overlapping its day or the hour after it (place).
func dayWindow(from, to int32, loc *time.Location) (lo, hi time.Time) {
	return startOfDay(from, loc).Add(-time.Hour), startOfDay(to+1, loc).Add(time.Hour)
}

// startOfDay is the first instant of local day day in loc.
func startOfDay(day int32, loc *time.Location) time.Time {
	y, m, d := dateOf(day).Date()
	return time.Date(y, m, d, 0, 0, 0, 0, loc)
}

// args are read_visits.sql's parameters: per visitor, the window of the visits read
// (those new events may join and those holding its sightings of the batch's days), and
// the window of those near.
func (s *visitSpans) args(zones map[int64]*time.Location) []any {
	n := len(s.keys)
	site, visitor := make([]int64, n), make([]int64, n)
	lo, hi, nlo, nhi := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	for i, k := range s.keys {
		site[i], visitor[i] = k.site, k.visitor
		nlo[i], nhi[i] = noWindowLo, noWindowHi
		if s.near[i] {
			nlo[i], nhi[i] = s.lo[i].Add(-visitGap), s.hi[i].Add(visitGap)
		}
		lo[i], hi[i] = nlo[i], nhi[i]
		if s.days[i] {
			dlo, dhi := dayWindow(s.from[i], s.to[i], zones[k.site])
			if !s.near[i] || dlo.Before(lo[i]) {
				lo[i] = dlo
			}
			if !s.near[i] || dhi.After(hi[i]) {
				hi[i] = dhi
			}
		}
	}
	return []any{site, visitor, lo, hi, nlo, nhi}
}

// An empty window: no visit ends after noWindowLo and starts before noWindowHi.
var (
	noWindowLo = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	noWindowHi = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
)

// scanVisits reads visits as read_visits.sql returns them.
func scanVisits(rows pgx.Rows) ([]visit, error) {
	var out []visit
	var v visit
	var day time.Time
	_, err := pgx.ForEachRow(rows, []any{&v.site, &v.visitor, &v.start, &v.end, &day, &v.pageviews, &v.events,
		&v.engagement, &v.entry, &v.entryAt, &v.exit, &v.exitAt, &v.seen, &v.near}, func() error {
		v.day = int32(day.Unix() / 86400)
		out = append(out, v)
		v.entry, v.entryAt, v.exit, v.exitAt, v.seen = nil, nil, nil, nil, nil
		return nil
	})
	return out, err
}

// mergeVisits merges the visits taken and the new events by the 30-minute rule: pieces
// (whole stored visits, single events) sorted by start form one visit until a piece
// starts more than 30 minutes after the latest end so far.
func mergeVisits(taken []visit, evs []*event.Event, zones map[int64]*time.Location) []visit {
	pieces := make([]visit, 0, len(taken)+len(evs))
	pieces = append(pieces, taken...)
	for _, e := range evs {
		p := visit{site: e.SiteID, visitor: e.Visitor, start: e.Time, end: e.Time, engagement: e.DurationMS}
		if e.IsPageview() {
			p.pageviews = 1
			page := event.Cut(e.Path, event.RollupValueChars)
			at := e.Time
			p.entry, p.entryAt, p.exit, p.exitAt = &page, &at, &page, &at
		}
		if e.IsInteraction() {
			p.events = 1
		}
		pieces = append(pieces, p)
	}
	// Sorted by index: a visit is too big a value to move around.
	order := make([]int32, len(pieces))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &pieces[i], &pieces[j]
		return cmp.Or(cmp.Compare(a.site, b.site), cmp.Compare(a.visitor, b.visitor),
			a.start.Compare(b.start), a.end.Compare(b.end))
	})
	out := make([]visit, 0, len(order))
	for i := 0; i < len(order); {
		cur := pieces[order[i]]
		j := i + 1
		for ; j < len(order); j++ {
			p := &pieces[order[j]]
			if p.site != cur.site || p.visitor != cur.visitor || p.start.After(cur.end.Add(visitGap)) {
				break
			}
			cur.join(p)
		}
		cur.day = dayOf(cur.start, zones[cur.site])
		out = append(out, cur)
		i = j
	}
	return out
}

// join adds p, which starts no earlier than v, to v. Ties between entry (exit) pages at
// the same instant go to the smallest (largest) page.
func (v *visit) join(p *visit) {
	if p.end.After(v.end) {
		v.end = p.end
	}
	v.pageviews += p.pageviews
	v.events += p.events
	v.engagement += p.engagement
	if p.entryAt != nil && (v.entryAt == nil || p.entryAt.Before(*v.entryAt) ||
		p.entryAt.Equal(*v.entryAt) && *p.entry < *v.entry) {
		v.entry, v.entryAt = p.entry, p.entryAt
	}
	if p.exitAt != nil && (v.exitAt == nil || p.exitAt.After(*v.exitAt) ||
		p.exitAt.Equal(*v.exitAt) && *p.exit > *v.exit) {
		v.exit, v.exitAt = p.exit, p.exitAt
	}
}

type visitKey struct {
	site, visitor int64
	start         time.Time
}

func (v *visit) key() visitKey { return visitKey{v.site, v.visitor, v.start.UTC()} }

// replaceVisits splits the change from the visits taken to the merged ones: taken visits
// no merged visit starts with are gone, merged visits starting like a taken one but
// differing from it changed in place, and the rest are new.
func replaceVisits(taken, merged []visit) (gone, changed, fresh []visit) {
	was := make(map[visitKey]*visit, len(taken))
	for i := range taken {
		was[taken[i].key()] = &taken[i]
	}
	// Each merged visit's taken one (nil: none), so the two lists are sized once: a
	// visit is too big a value to grow a slice of one append at a time.
	olds := make([]*visit, len(merged))
	nChanged := 0
	for i := range merged {
		k := merged[i].key()
		if old, ok := was[k]; ok {
			olds[i] = old
			delete(was, k)
			if !old.same(&merged[i]) {
				nChanged++
			}
		}
	}
	changed, fresh = make([]visit, 0, nChanged), make([]visit, 0, len(merged)-len(taken)+len(was))
	for i := range merged {
		switch old := olds[i]; {
		case old == nil:
			fresh = append(fresh, merged[i])
		case !old.same(&merged[i]):
			changed = append(changed, merged[i])
		}
	}
	for i := range taken {
		if _, ok := was[taken[i].key()]; ok {
			gone = append(gone, taken[i])
		}
	}
	return gone, changed, fresh
}

// same reports whether v and o hold the same figures.
func (v *visit) same(o *visit) bool {
	return v.end.Equal(o.end) && v.day == o.day && v.pageviews == o.pageviews && v.events == o.events &&
		v.engagement == o.engagement && eqPtr(v.entry, o.entry) && eqTime(v.entryAt, o.entryAt) &&
		eqPtr(v.exit, o.exit) && eqTime(v.exitAt, o.exitAt)
}

func eqPtr(a, b *string) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

func eqTime(a, b *time.Time) bool { return a == nil && b == nil || a != nil && b != nil && a.Equal(*b) }

func visitKeyArgs(vs []visit) []any {
	site, visitor, start := make([]int64, len(vs)), make([]int64, len(vs)), make([]time.Time, len(vs))
	for i, v := range vs {
		site[i], visitor[i], start[i] = v.site, v.visitor, v.start
	}
	return []any{site, visitor, start}
}

// visitArgs are update_visits.sql's parameters: the visits' figures, and the sightings
// each appends, visit i's being hashes[lo[i]-1:hi[i]].
func visitArgs(vs []visit) []any {
	n := len(vs)
	var (
		site, visitor, eng = make([]int64, n), make([]int64, n), make([]int64, n)
		start, end         = make([]time.Time, n), make([]time.Time, n)
		day                = make([]time.Time, n)
		pv, ev             = make([]int32, n), make([]int32, n)
		entry, exit        = make([]*string, n), make([]*string, n)
		entryAt, exitAt    = make([]*time.Time, n), make([]*time.Time, n)
		hashes             = []int64{}
		lo, hi             = make([]int32, n), make([]int32, n)
	)
	for i, v := range vs {
		site[i], visitor[i], start[i], end[i], day[i] = v.site, v.visitor, v.start, v.end, dateOf(v.day)
		pv[i], ev[i], eng[i] = v.pageviews, v.events, v.engagement
		entry[i], entryAt[i], exit[i], exitAt[i] = v.entry, v.entryAt, v.exit, v.exitAt
		lo[i] = int32(len(hashes) + 1)
		hashes = append(hashes, v.add...)
		hi[i] = int32(len(hashes))
	}
	return []any{site, visitor, start, end, day, pv, ev, eng, entry, entryAt, exit, exitAt, hashes, lo, hi}
}

// visitColumns are the visits columns copyVisit fills, in its order.
var visitColumns = []string{"site_id", "visitor_id", "started_at", "ended_at", "day", "pageviews", "events",
	"engagement_ms", "entry_page", "entry_at", "exit_page", "exit_at", "seen"}

// copyVisit writes vs[i], a new visit, as a COPY row of visitColumns; a new visit's
// sightings are those the batch adds to it.
func copyVisit(vs []visit) func(w *pgutil.CopyRow, i int) {
	none := []int64{}
	return func(w *pgutil.CopyRow, i int) {
		v := &vs[i]
		w.Int8(v.site)
		w.Int8(v.visitor)
		w.Timestamptz(v.start)
		w.Timestamptz(v.end)
		w.Date(v.day)
		w.Int4(int64(v.pageviews))
		w.Int4(int64(v.events))
		w.Int8(v.engagement)
		w.TextOrNull(v.entry)
		w.TimestamptzOrNull(v.entryAt)
		w.TextOrNull(v.exit)
		w.TimestamptzOrNull(v.exitAt)
		if v.add != nil {
			w.Int8Array(v.add)
		} else {
			w.Int8Array(none)
		}
	}
}

type visitDimKey struct {
	site  int64
	day   int32
	dim   int16
	value string
}

type visitCount struct{ visits, bounces, duration int64 }

// visitRows are rollup_visits increments, one array per column.
type visitRows struct {
	site                       []int64
	day                        []time.Time
	dim                        []int16
	value                      []string
	visits, bounces, durations []int64
}

func (r *visitRows) args() []any {
	return []any{r.site, r.day, r.dim, r.value, r.visits, r.bounces, r.durations}
}

func (r *visitRows) keyArgs() []any { return []any{r.site, r.day, r.dim, r.value} }

// decreased are the rows whose visits went down: only those can reach zero.
func (r *visitRows) decreased() visitRows {
	var out visitRows
	for i, n := range r.visits {
		if n < 0 {
			out.site, out.day, out.dim, out.value = append(out.site, r.site[i]), append(out.day, r.day[i]), append(out.dim, r.dim[i]), append(out.value, r.value[i])
		}
	}
	return out
}

// visitDeltas is the change to rollup_visits of replacing taken by merged: per site,
// day and dim (0 total, 1 entry page, 2 exit page).
func visitDeltas(taken, merged []visit) visitRows {
	sum := map[visitDimKey]*visitCount{}
	add := func(vs []visit, sign int64) {
		for i := range vs {
			v := &vs[i]
			bounce := int64(0)
			if v.bounce() {
				bounce = 1
			}
			dur := v.duration()
			var at [3]visitDimKey
			keys := append(at[:0], visitDimKey{v.site, v.day, 0, ""})
			if v.entry != nil {
				keys = append(keys, visitDimKey{v.site, v.day, 1, *v.entry})
			}
			if v.exit != nil {
				keys = append(keys, visitDimKey{v.site, v.day, 2, *v.exit})
			}
			for _, k := range keys {
				c := sum[k]
				if c == nil {
					c = &visitCount{}
					sum[k] = c
				}
				c.visits += sign
				c.bounces += sign * bounce
				c.duration += sign * dur
			}
		}
	}
	add(taken, -1)
	add(merged, 1)
	keys := make([]visitDimKey, 0, len(sum))
	for k, c := range sum {
		if *c != (visitCount{}) {
			keys = append(keys, k)
		}
	}
	// Sorted by key: one lock order for every writer keeps concurrent upserts from
	// deadlocking.
	slices.SortFunc(keys, func(a, b visitDimKey) int {
		return cmp.Or(cmp.Compare(a.site, b.site), cmp.Compare(a.day, b.day), cmp.Compare(a.dim, b.dim), strings.Compare(a.value, b.value))
	})
	var r visitRows
	for _, k := range keys {
		c := sum[k]
		r.site, r.day, r.dim, r.value = append(r.site, k.site), append(r.day, dateOf(k.day)), append(r.dim, k.dim), append(r.value, k.value)
		r.visits, r.bounces, r.durations = append(r.visits, c.visits), append(r.bounces, c.bounces), append(r.durations, c.duration)
	}
	return r
}
