package stats

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"golang.org/x/sync/errgroup"

	"github.com/haru-analytics/haru/pkg/event"
)

// A view that the rollups cannot answer (a filter, a range that does not fall on local
// days) reads raw events in two statements run side by side:
//
//   - visitStatement aggregates the period's visits in Postgres (few rows per visitor);
//   - eventStream streams the period's filtered events ordered by visitor, and
//     foldEvents aggregates them here, one visitor at a time: each visitor's distinct
//     (value, day) pairs are found among its own few events, so no statement groups the
//     whole period by visitor once per panel.
//
// Visitors add each local day's uniques, as the rollups do; hourly series count each
// hour's. The figures are those of the single statement in rawref_test.go, which the
// tests keep as the reference.

// Event kinds in the stream.
const (
	kindEngagement = 0
	kindPageview   = 1
	kindCustom     = 2
)

// epochDay is the day 0 of the stream's day numbers.
var epochDay = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// filterConds are the conditions of filters over events e and over visits v.
func filterConds(a *args, filters []Filter) (ev, visit []string) {
	for _, fl := range filters {
		cond := filterSQL(a, fl)
		if fl.dim.visit {
			visit = append(visit, cond)
		} else {
			ev = append(ev, cond)
		}
	}
	return ev, visit
}

// visitsOfEvent is the condition that events row e falls in a visit matching conds.
func visitsOfEvent(conds []string) string {
	return `EXISTS (SELECT 1 FROM visits v WHERE v.site_id = e.site_id AND v.visitor_id = e.visitor_id
	              AND v.started_at <= e.ts AND v.ended_at >= e.ts AND ` + strings.Join(conds, " AND ") + `)`
}

// eventDims are the dimensions of pl read from events rather than visits.
func eventDims(pl plan) []dimension {
	var out []dimension
	for _, d := range pl.dims {
		if !d.visit {
			out = append(out, d)
		}
	}
	return out
}

// fromProps tells whether d's values come from the events' properties.
func (d dimension) fromProps() bool { return d.props || d.prop != "" }

// needsVisits tells whether pl has a section aggregated from visits.
func needsVisits(pl plan) bool {
	if pl.summary || pl.series {
		return true
	}
	for _, d := range pl.dims {
		if d.visit {
			return true
		}
	}
	return false
}

// eventStream is the statement streaming the events of p that pass filters, ordered by
// visitor: visitor, time, name, then the column of each event dimension of pl, then the
// props object when a property panel is asked for. Postgres only finds and sorts the
// rows; values are cut and classed here.
func eventStream(site int64, p Period, filters []Filter, pl plan) statement {
	a := args{}
	s, f, t := a.add(site), a.add(p.From), a.add(p.To)
	evConds, visitConds := filterConds(&a, filters)
	var sb strings.Builder
	sb.WriteString("SELECT e.visitor_id, e.ts, e.name")
	props := false
	for _, d := range eventDims(pl) {
		if d.fromProps() {
			props = true
		} else {
			sb.WriteString(", e." + d.col)
		}
	}
	if props {
		sb.WriteString(", CASE WHEN jsonb_typeof(e.props) = 'object' THEN e.props END")
	}
	sb.WriteString("\nFROM events e\nWHERE e.site_id = " + s + " AND e.ts >= " + f + " AND e.ts < " + t)
	for _, c := range evConds {
		sb.WriteString("\n  AND " + c)
	}
	if len(visitConds) > 0 {
		sb.WriteString("\n  AND " + visitsOfEvent(visitConds))
	}
	sb.WriteString("\nORDER BY e.visitor_id")
	return statement{sb.String(), a}
}

// vsSums are visitSums over the rows of vs.
const vsSums = `count(*)::int8, coalesce(sum(bounce), 0)::int8, coalesce(sum(dur), 0)::int8`

// visitStatement aggregates the visit sections of pl (visit totals and series, entry and
// exit pages) from the visits started in p that pass filters: a visit passes an event
// filter when one of its events before evTo (the end of the view p is part of) does.
func visitStatement(site int64, p Period, evTo time.Time, filters []Filter, pl plan) statement {
	a := args{}
	s, f, t := a.add(site), a.add(p.From), a.add(p.To)
	fd, td := a.add(p.fromDay()), a.add(p.toDay())
	evConds, visitConds := filterConds(&a, filters)
	var sb strings.Builder
	sb.WriteString("WITH ")
	if len(evConds) > 0 {
		sb.WriteString(`ev AS MATERIALIZED (
	SELECT e.visitor_id, e.ts FROM events e
	WHERE e.site_id = ` + s + ` AND e.ts >= ` + f + ` AND e.ts < ` + a.add(evTo) + `
	  AND ` + strings.Join(evConds, "\n\t  AND ") + `
), `)
	}
	sb.WriteString(`vs AS MATERIALIZED (
	SELECT v.day, v.started_at, (v.pageviews = 1 AND v.events = 0)::int AS bounce,
	       floor(extract(epoch FROM v.ended_at - v.started_at) * 1000)::bigint + v.engagement_ms AS dur,
	       v.entry_page, v.exit_page
	FROM visits v
	WHERE v.site_id = ` + s + ` AND v.day >= ` + fd + ` AND v.day <= ` + td + `
	  AND v.started_at >= ` + f + ` AND v.started_at < ` + t)
	for _, c := range visitConds {
		sb.WriteString("\n\t  AND " + c)
	}
	if len(evConds) > 0 {
		sb.WriteString(`
	  AND EXISTS (SELECT 1 FROM ev e WHERE e.visitor_id = v.visitor_id AND e.ts >= v.started_at AND e.ts <= v.ended_at)`)
	}
	sb.WriteString("\n)\n")
	var parts []string
	if pl.summary {
		parts = append(parts, `SELECT 'vsum', '', 0::int8, 0::int8, 0::int8, `+vsSums+` FROM vs`)
	}
	if pl.series {
		b := dayBucket(p.Interval, "day")
		if p.Interval == Hour {
			b = hourBucket("started_at")
		}
		parts = append(parts, `SELECT 'vser', `+b+`, 0::int8, 0::int8, 0::int8, `+vsSums+` FROM vs GROUP BY 2`)
	}
	for _, d := range pl.dims {
		if d.visit {
			parts = append(parts, `SELECT `+a.add(d.name)+`::text, `+d.expr+`, 0::int8, 0::int8, 0::int8, `+vsSums+`
	FROM vs v WHERE `+d.expr+` IS NOT NULL GROUP BY 2`)
		}
	}
	sb.WriteString(strings.Join(parts, "\nUNION ALL\n"))
	return statement{sb.String(), a}
}

// rawKey names a result over past days computed from raw events.
type rawKey struct {
	site       int64
	from, to   int64
	evTo       int64
	tz         string
	interval   string
	filters    string
	summary    bool
	series     bool
	dimensions string
}

// filtersKey names filters in a rawKey, as Canonical does.
func filtersKey(filters []Filter) string {
	var b strings.Builder
	for _, f := range filters {
		b.WriteString(f.Dimension + ":" + f.Op + ":" + f.Value + "\x00")
	}
	return b.String()
}

// rawRun answers pl for p from raw events. Past days are settled (see pastCache): the
// whole result of a period's past days, from a local midnight to today's, is computed
// once and kept a while, and only today's events are read again, so a filtered view's
// live refresh and its previous period cost one day's read. Visitors add each day's
// uniques and a visit counts on the day it started, so the two parts add up; a visit
// of the past days that an event of today's extends or lets pass a filter shows so when
// the cache is next refreshed, as with the rollups' past days.
func (q *Querier) rawRun(ctx context.Context, site int64, filters []Filter, p Period, pl plan, now time.Time) (result, error) {
	whole := pl
	whole.limit, whole.offset = 0, 0
	today := p.today(now)
	split := p.To
	if today.Before(split) {
		split = today
	}
	var res result
	if !isMidnight(p.From, p.Location()) || !split.After(p.From) {
		var err error
		if res, err = q.rawCompute(ctx, site, filters, p, p.To, whole); err != nil {
			return result{}, err
		}
	} else {
		past := p
		past.To = split
		k := rawKey{site: site, from: past.From.Unix(), to: past.To.Unix(), evTo: p.To.Unix(), tz: p.Timezone, interval: p.Interval,
			filters: filtersKey(filters), summary: pl.summary, series: pl.series}
		for _, d := range pl.dims {
			k.dimensions += d.name + "\x00"
		}
		// The past days (when not cached) and today are read side by side.
		var recent result
		g, gctx := errgroup.WithContext(ctx)
		cached, ok := q.rawPast.get(k, now)
		if !ok {
			g.Go(func() (err error) {
				if cached, err = q.rawCompute(gctx, site, filters, past, p.To, whole); err == nil {
					q.rawPast.put(k, cached, cached.size(), now)
				}
				return err
			})
		}
		if split.Before(p.To) {
			g.Go(func() (err error) {
				part := p
				part.From = split
				recent, err = q.rawCompute(gctx, site, filters, part, p.To, whole)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return result{}, err
		}
		res = cached.clone()
		if split.Before(p.To) {
			res.add(recent)
		}
	}
	for _, d := range pl.dims {
		rs := res.dims[d.name]
		sortRows(rs, d.visit)
		res.dims[d.name] = pageOf(rs, pl.limit, pl.offset)
	}
	return res, nil
}

// rawCompute reads p's raw events and visits for pl side by side: every row of every
// breakdown, unsorted. Visits started in p pass an event filter by their events before
// evTo.
func (q *Querier) rawCompute(ctx context.Context, site int64, filters []Filter, p Period, evTo time.Time, pl plan) (result, error) {
	var evRows, visitRows []sectionRow
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) {
		evRows, err = q.rawEvents(gctx, eventStream(site, p, filters, pl), p, pl)
		return err
	})
	if needsVisits(pl) {
		g.Go(func() (err error) {
			visitRows, err = q.query(gctx, visitStatement(site, p, evTo, filters, pl), true)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return result{}, err
	}
	res := result{series: map[string]totals{}, dims: map[string][]row{}}
	res.merge(evRows)
	res.merge(visitRows)
	return res, nil
}

// size is how many rows r holds.
func (r result) size() int {
	n := len(r.series)
	for _, rs := range r.dims {
		n += len(rs)
	}
	return n
}

// clone is a copy of r that shares nothing with it.
func (r result) clone() result {
	c := result{sum: r.sum, series: maps.Clone(r.series), dims: make(map[string][]row, len(r.dims))}
	for name, rs := range r.dims {
		c.dims[name] = slices.Clone(rs)
	}
	return c
}

// add adds o's figures to r, row by row (unsorted).
func (r *result) add(o result) {
	r.sum.add(o.sum)
	for label, t := range o.series {
		s := r.series[label]
		s.add(t)
		r.series[label] = s
	}
	for name, rs := range o.dims {
		r.dims[name] = sumRows(r.dims[name], rs)
	}
}

// rawEvents runs st (an eventStream of pl) and folds its rows into section rows: the
// summary, the series and every event dimension's rows, unsorted and unpaged.
func (q *Querier) rawEvents(ctx context.Context, st statement, p Period, pl plan) (_ []sectionRow, err error) {
	ctx, end := q.span(ctx, st, "raw_events")
	defer func() { end(err) }()
	r, err := q.pool.Query(ctx, st.sql, st.plannedEachTime()...)
	if err != nil {
		return nil, fmt.Errorf("stats events: %w", err)
	}
	defer r.Close()
	fo := newFolder(p, pl)
	formats := r.FieldDescriptions()
	for r.Next() {
		if err := fo.add(r.RawValues(), formats); err != nil {
			return nil, fmt.Errorf("stats events: %w", err)
		}
	}
	if err := r.Err(); err != nil {
		return nil, fmt.Errorf("stats events: %w", err)
	}
	fo.flush()
	return fo.rows(), nil
}

// folder aggregates an eventStream one visitor at a time.
type folder struct {
	p       Period
	summary bool
	series  bool
	dims    []foldDim
	// propsCol is the column of the props object, -1 without one.
	propsCol int

	sum totals
	// ser holds the series by bucket: the Unix time of its UTC hour for hourly series,
	// else the day number of its first local day; bucketDay caches the latter by day.
	ser       map[int64]*totals
	bucketDay map[int32]int32

	// The current visitor's events.
	visitor int64
	events  []foldEvent
	vals    []int32 // the events' dimension values, len(dims) per event
	props   []propPair
	seen    pairSet
}

// foldDim is one event dimension's values (interned) and their totals.
type foldDim struct {
	d      dimension
	ids    map[string]int32
	values []string
	t      []totals
	// valueIDs number the property values of the props panel (d.props: rows by key).
	valueIDs map[string]int32
}

// valueID numbers property value v.
func (fd *foldDim) valueID(v string) int32 {
	id, ok := fd.valueIDs[v]
	if !ok {
		id = int32(len(fd.valueIDs))
		fd.valueIDs[v] = id
	}
	return id
}

func (fd *foldDim) internString(v string) int32 {
	if id, ok := fd.ids[v]; ok {
		return id
	}
	id := int32(len(fd.values))
	fd.ids[v] = id
	fd.values = append(fd.values, v)
	fd.t = append(fd.t, totals{})
	return id
}

// intern is internString(string(b)), with no string made for a value seen before.
func (fd *foldDim) intern(b []byte) int32 {
	if id, ok := fd.ids[string(b)]; ok {
		return id
	}
	return fd.internString(string(b))
}

type foldEvent struct {
	day        int32
	kind       int16
	hour       int64
	propsStart int32
	propsEnd   int32
}

// propPair is one property of an event, cut as the rollups cut it.
type propPair struct {
	key, value string
}

func newFolder(p Period, pl plan) *folder {
	fo := &folder{p: p, summary: pl.summary, series: pl.series, propsCol: -1,
		ser: map[int64]*totals{}, bucketDay: map[int32]int32{}}
	col, props := 3, false // the columns before the dimensions'
	for _, d := range eventDims(pl) {
		fd := foldDim{d: d, ids: map[string]int32{}}
		if d.props {
			fd.valueIDs = map[string]int32{}
		}
		if d.fromProps() {
			props = true
		} else {
			col++
		}
		fo.dims = append(fo.dims, fd)
	}
	if props {
		fo.propsCol = col // after the plain dimensions' columns
	}
	return fo
}

// add takes one streamed row.
func (fo *folder) add(vals [][]byte, fds []pgconn.FieldDescription) error {
	visitor, err := intOf(vals[0], fds[0])
	if err != nil {
		return err
	}
	if len(fo.events) > 0 && visitor != fo.visitor {
		fo.flush()
	}
	fo.visitor = visitor
	if vals[1] == nil || len(vals[1]) != 8 || fds[1].Format != pgtype.BinaryFormatCode {
		return fmt.Errorf("column ts: want a binary timestamptz")
	}
	// A binary timestamptz counts microseconds from 2000-01-01 UTC.
	ts := time.UnixMicro(epochDay.UnixMicro() + int64(binary.BigEndian.Uint64(vals[1])))
	y, m, d := ts.In(fo.p.Location()).Date()
	ev := foldEvent{day: dayNumber(time.Date(y, m, d, 0, 0, 0, 0, time.UTC)),
		kind: kindOf(vals[2]), hour: ts.Unix() - ts.Unix()%3600}
	col := 3
	for i := range fo.dims {
		fd := &fo.dims[i]
		if fd.d.fromProps() {
			fo.vals = append(fo.vals, -1)
			continue
		}
		v, err := fd.value(vals[col], fds[col], ev.kind)
		if err != nil {
			return err
		}
		fo.vals = append(fo.vals, v)
		col++
	}
	ev.propsStart = int32(len(fo.props))
	if fo.propsCol >= 0 && vals[fo.propsCol] != nil {
		b := vals[fo.propsCol]
		if fds[fo.propsCol].Format == pgtype.BinaryFormatCode && len(b) > 0 {
			b = b[1:] // a binary jsonb is a version byte, then the text
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			return fmt.Errorf("props: %w", err)
		}
		for k, v := range m {
			s, ok := v.(string)
			if !ok {
				b, _ := json.Marshal(v)
				s = string(b)
			}
			fo.props = append(fo.props, propPair{event.Cut(k, event.RollupKeyChars), event.Cut(s, event.RollupValueChars)})
		}
	}
	ev.propsEnd = int32(len(fo.props))
	fo.events = append(fo.events, ev)
	return nil
}

// kindOf is the kind of an event named name.
func kindOf(name []byte) int16 {
	switch string(name) {
	case event.PageviewName:
		return kindPageview
	case event.EngagementName:
		return kindEngagement
	}
	return kindCustom
}

// value is the dimension's value (interned) of column b of an event of kind, as the
// rollups count it; -1 when they do not count the event under the dimension.
func (fd *foldDim) value(b []byte, desc pgconn.FieldDescription, kind int16) (int32, error) {
	switch fd.d.rule {
	case ruleScreen:
		w, err := intOf(b, desc)
		if err != nil {
			return 0, err
		}
		return fd.internString(event.ScreenClass(int(w))), nil
	case ruleEvent:
		if kind != kindCustom {
			return -1, nil
		}
		return fd.intern(b), nil
	case ruleNonEmpty:
		if len(b) == 0 {
			return -1, nil
		}
	}
	if len(b) > event.RollupValueChars {
		return fd.internString(event.Cut(string(b), event.RollupValueChars)), nil
	}
	return fd.intern(b), nil
}

// flush folds the current visitor's events into the totals.
func (fo *folder) flush() {
	if len(fo.events) == 0 {
		return
	}
	evs, n := fo.events, len(fo.dims)
	// Summary: each distinct local day is one visitor.
	fo.seen.reset(len(evs))
	for _, e := range evs {
		pv, ce := kindCounts(e.kind)
		fo.sum.Pageviews += pv
		fo.sum.Events += ce
		if fo.seen.add(pairKey{0, 0, e.day}) {
			fo.sum.Visitors++
		}
	}
	if fo.series {
		fo.seen.reset(len(evs))
		for _, e := range evs {
			pv, ce := kindCounts(e.kind)
			// Visitors count once per bucket and local day, or per hour.
			k, seen := fo.bucket(e), pairKey{0, 0, e.day}
			if fo.p.Interval == Hour {
				seen = pairKey{int32(e.hour >> 32), int32(e.hour), 0}
			}
			t := fo.ser[k]
			if t == nil {
				t = &totals{}
				fo.ser[k] = t
			}
			t.Pageviews += pv
			t.Events += ce
			if fo.seen.add(seen) {
				t.Visitors++
			}
		}
	}
	for i := range fo.dims {
		fd := &fo.dims[i]
		fo.seen.reset(len(evs) + len(fo.props))
		for j, e := range evs {
			pv, ce := kindCounts(e.kind)
			switch {
			case fd.d.props:
				for _, pp := range fo.props[e.propsStart:e.propsEnd] {
					k := fd.internString(pp.key)
					t := &fd.t[k]
					t.Pageviews += pv
					t.Events += ce
					if fo.seen.add(pairKey{k, fd.valueID(pp.value), e.day}) {
						t.Visitors++
					}
				}
			case fd.d.prop != "":
				for _, pp := range fo.props[e.propsStart:e.propsEnd] {
					if pp.key != fd.d.prop {
						continue
					}
					v := fd.internString(pp.value)
					t := &fd.t[v]
					t.Pageviews += pv
					t.Events += ce
					if fo.seen.add(pairKey{v, 0, e.day}) {
						t.Visitors++
					}
				}
			default:
				v := fo.vals[j*n+i]
				if v < 0 {
					continue
				}
				t := &fd.t[v]
				t.Pageviews += pv
				t.Events += ce
				if fo.seen.add(pairKey{v, 0, e.day}) {
					t.Visitors++
				}
			}
		}
	}
	fo.events, fo.vals, fo.props = fo.events[:0], fo.vals[:0], fo.props[:0]
}

func kindCounts(kind int16) (pv, ce int64) {
	switch kind {
	case kindPageview:
		return 1, 0
	case kindCustom:
		return 0, 1
	}
	return 0, 0
}

// bucket is the series bucket of e: the Unix time of its UTC hour for hourly series,
// else the day number of the first local day of its day, week or month.
func (fo *folder) bucket(e foldEvent) int64 {
	if fo.p.Interval == Hour {
		return e.hour
	}
	first, ok := fo.bucketDay[e.day]
	if !ok {
		d := dayOf(e.day)
		switch fo.p.Interval {
		case Week:
			d = d.AddDate(0, 0, -((int(d.Weekday()) + 6) % 7))
		case Month:
			d = time.Date(d.Year(), d.Month(), 1, 0, 0, 0, 0, time.UTC)
		}
		first = dayNumber(d)
		fo.bucketDay[e.day] = first
	}
	return int64(first)
}

// dayOf is the date of day number n; dayNumber the number of date d (UTC midnight).
func dayOf(n int32) time.Time     { return epochDay.AddDate(0, 0, int(n)) }
func dayNumber(d time.Time) int32 { return int32(d.Sub(epochDay) / (24 * time.Hour)) }

// rows are the folded totals as section rows.
func (fo *folder) rows() []sectionRow {
	var out []sectionRow
	if fo.summary {
		out = append(out, sectionRow{section: "sum", t: fo.sum})
	}
	for k, t := range fo.ser {
		label := strconv.FormatInt(k, 10) // as the SQL names an hour's bucket
		if fo.p.Interval != Hour {
			label = dayOf(int32(k)).Format(time.DateOnly)
		}
		out = append(out, sectionRow{section: "ser", label: label, t: *t})
	}
	for _, fd := range fo.dims {
		for i, v := range fd.values {
			out = append(out, sectionRow{section: fd.d.name, label: v, t: fd.t[i]})
		}
	}
	return out
}

// pairKey is what one visitor's distinct pairs are told apart by.
type pairKey struct {
	a, b, day int32
}

// pairSet is a set of one visitor's pairs: a visitor has few events, so a short list
// searched in order, turning into a map for the rare visitor with many.
type pairSet struct {
	list []pairKey
	big  map[pairKey]struct{}
}

const pairSetListMax = 32

func (s *pairSet) reset(n int) {
	s.list, s.big = s.list[:0], nil
	if n > pairSetListMax {
		s.big = map[pairKey]struct{}{}
	}
}

// add adds k and tells whether it was new.
func (s *pairSet) add(k pairKey) bool {
	if s.big != nil {
		if _, ok := s.big[k]; ok {
			return false
		}
		s.big[k] = struct{}{}
		return true
	}
	for _, x := range s.list {
		if x == k {
			return false
		}
	}
	s.list = append(s.list, k)
	return true
}

// intOf decodes an integer column in either wire format.
func intOf(b []byte, fd pgconn.FieldDescription) (int64, error) {
	if b == nil {
		return 0, fmt.Errorf("column %s is NULL", fd.Name)
	}
	if fd.Format == pgtype.TextFormatCode {
		return strconv.ParseInt(string(b), 10, 64)
	}
	switch len(b) {
	case 2:
		return int64(int16(binary.BigEndian.Uint16(b))), nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b))), nil
	case 8:
		return int64(binary.BigEndian.Uint64(b)), nil
	}
	return 0, fmt.Errorf("column %s: %d bytes for an integer", fd.Name, len(b))
}
