package store

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/haru-analytics/haru/pkg/event"
)

// Dimension numbers of rollup_dims, listed in migration 000002.
const (
	dimTotal    = 0
	dimProperty = 16
	// maxPropValues bounds the distinct values a property keeps per site and day; new
	// values beyond it count as otherValue.
	maxPropValues = 1000
	otherValue    = "(other)"
)

type visitorDay struct {
	site    int64
	day     int32
	visitor int64
}

type propKey struct {
	site       int64
	day        int32
	key, value string
}

// days holds what a batch adds per visitor and day: each event's local day, the
// visitor-days whose first sightings it may add, and the property values it carries.
// A visitor's sightings of a day name the (dim, key, value) the visitor was counted
// under that day and, for rollup_hourly, the UTC hours it was counted in: an hour belongs
// to the local day its start falls on, so each hour is tagged with exactly one day even
// where a zone's offset is not whole hours.
type days struct {
	events      []*event.Event
	day         []int32 // of events[i]
	hours       []*event.Event
	hourSeen    []hourSighting // of hours[i]
	visitorDays []visitorDay
	vdIndex     map[visitorDay]int
	props       []propKey
	propIndex   map[propKey]int
}

type hourKey struct {
	site int64
	hour time.Time
}

type hourSighting struct {
	vd   int // index in visitorDays
	hash int64
	key  hourKey
}

func newDays(w work) *days {
	d := &days{events: w.dims, day: make([]int32, len(w.dims)), hours: w.hours, hourSeen: make([]hourSighting, len(w.hours)),
		vdIndex: map[visitorDay]int{}, propIndex: map[propKey]int{}}
	for i, e := range w.dims {
		day := dayOf(e.Time, w.zones[e.SiteID])
		d.day[i] = day
		d.visitorDay(visitorDay{e.SiteID, day, e.Visitor})
		for k, v := range e.Props {
			pk := propKey{e.SiteID, day, event.Cut(k, event.RollupKeyChars), event.Cut(v, event.RollupValueChars)}
			if _, ok := d.propIndex[pk]; !ok {
				d.propIndex[pk] = len(d.props)
				d.props = append(d.props, pk)
			}
		}
	}
	hashes := map[time.Time]int64{}
	for i, e := range w.hours {
		hour := e.Time.UTC().Truncate(time.Hour)
		h, ok := hashes[hour]
		if !ok {
			h = hourHash(hour)
			hashes[hour] = h
		}
		day := dayOf(hour, w.zones[e.SiteID])
		vd := d.visitorDay(visitorDay{e.SiteID, day, e.Visitor})
		d.hourSeen[i] = hourSighting{vd: vd, hash: tagDay(h, day), key: hourKey{e.SiteID, hour}}
	}
	return d
}

// visitorDay returns vd's index, adding it if new.
func (d *days) visitorDay(vd visitorDay) int {
	i, ok := d.vdIndex[vd]
	if !ok {
		i = len(d.visitorDays)
		d.vdIndex[vd] = i
		d.visitorDays = append(d.visitorDays, vd)
	}
	return i
}

// hourHash names a UTC hour among a visitor's sightings, as dim -1 with the hour's Unix
// time as value (migration 000003 computed the same in SQL).
func hourHash(hour time.Time) int64 { return dimHash(-1, "", strconv.FormatInt(hour.Unix(), 10)) }

// A sighting is stored as its hash with the low 16 bits replaced by the local day it
// counts in (days since 1970, modulo 2^16): a visitor's sightings of every day live
// together on its visits (visits.seen), the same value on two days stays two sightings,
// and a rebuild finds those of its days by the tag. 48 bits of hash are left: two of a
// visitor's values collide with odds of about n^2/2^49 for n values that day.
const dayTagMask = 0xFFFF

// tagDay is h tagged with day.
func tagDay(h int64, day int32) int64 { return h&^dayTagMask | int64(uint16(day)) }

// propGroups are the batch's properties (site, day, key), and for each of d.props the
// index of its property among them.
func (d *days) propGroups() (groups []propGroup, of []int) {
	at := map[propGroup]int{}
	of = make([]int, len(d.props))
	for i, p := range d.props {
		g := propGroup{p.site, p.day, p.key}
		n, ok := at[g]
		if !ok {
			n = len(groups)
			at[g] = n
			groups = append(groups, g)
		}
		of[i] = n
	}
	return groups, of
}

// propGroup is a property of a site on a day.
type propGroup struct {
	site int64
	day  int32
	key  string
}

func propGroupArgs(groups []propGroup) []any {
	site, day, key := make([]int64, len(groups)), make([]time.Time, len(groups)), make([]string, len(groups))
	for i, g := range groups {
		site[i], day[i], key[i] = g.site, dateOf(g.day), g.key
	}
	return []any{site, day, key}
}

// readProps takes in the stored values of the batch's properties (read_props.sql: the
// property's index in groups, from 1, and a value): for each of d.props, whether its
// value is counted already, and how many values its property has, (other) aside.
func (d *days) readProps(rows pgx.Rows, groups []propGroup, of []int) (known []bool, used []int64, err error) {
	values := make([]map[string]bool, len(groups))
	var g int64
	var v string
	_, err = pgx.ForEachRow(rows, []any{&g, &v}, func() error {
		if g < 1 || int(g) > len(groups) {
			return fmt.Errorf("read props: property %d of %d", g, len(groups))
		}
		if values[g-1] == nil {
			values[g-1] = map[string]bool{}
		}
		values[g-1][v] = true
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	known, used = make([]bool, len(d.props)), make([]int64, len(d.props))
	for i, p := range d.props {
		vs := values[of[i]]
		known[i], used[i] = vs[p.value], int64(len(vs))
		if vs[otherValue] {
			used[i]-- // (other) is not a value of its own
		}
	}
	return known, used, nil
}

// propMapping maps each property value of the batch to the value counted: itself, or
// otherValue once its property has maxPropValues values that day. New values are
// admitted in value order, as earlier versions did in SQL.
func (d *days) propMapping(st readState) map[propKey]string {
	fresh := map[propGroup][]string{}
	used := map[propGroup]int64{}
	out := make(map[propKey]string, len(d.props))
	for i, p := range d.props {
		if st.propKnown[i] {
			out[p] = p.value
			continue
		}
		g := propGroup{p.site, p.day, p.key}
		fresh[g] = append(fresh[g], p.value)
		used[g] = st.propUsed[i]
	}
	for g, values := range fresh {
		slices.Sort(values)
		room := maxPropValues - used[g]
		for i, v := range values {
			mapped := v
			if int64(i) >= room {
				mapped = otherValue
			}
			out[propKey{g.site, g.day, g.key, v}] = mapped
		}
	}
	return out
}

type dimKey struct {
	site       int64
	day        int32
	dim        int16
	key, value string
}

type dimCount struct {
	pageviews, events, visitors int64
	hash                        int64
}

// dimRows are rollup_dims increments, one array per column.
type dimRows struct {
	site                        []int64
	day                         []time.Time
	dim                         []int16
	key, value                  []string
	pageviews, events, visitors []int64
}

func (r *dimRows) args() []any {
	return []any{r.site, r.day, r.dim, r.key, r.value, r.pageviews, r.events, r.visitors}
}

type siteHash struct{ site, hash int64 }

// tally is the part of the aggregation that needs nothing read from Postgres, so it can
// run while the batch's insert or reads are in flight: counts per (site, day, dim, key,
// value) of dims 0..15, counts per (site, hour), and each visitor-day's hashes.
type tally struct {
	counts    map[dimKey]*dimCount
	hours     map[hourKey]*dimCount
	hourOf    map[siteHash]hourKey
	batchSeen [][]int64
}

func (d *days) tally() *tally {
	t := &tally{counts: map[dimKey]*dimCount{}, hours: map[hourKey]*dimCount{}, hourOf: map[siteHash]hourKey{},
		batchSeen: make([][]int64, len(d.visitorDays))}
	// Each visitor-day's hashes get a window of one backing array, sized for about 16
	// per event (dims 0..15) and one per hour event, so appends rarely regrow.
	size := make([]int, len(d.visitorDays))
	for i, e := range d.events {
		size[d.vdIndex[visitorDay{e.SiteID, d.day[i], e.Visitor}]] += 16
	}
	for _, hs := range d.hourSeen {
		size[hs.vd]++
	}
	room := make([]int64, 16*len(d.events)+len(d.hours))
	at := 0
	for i, n := range size {
		t.batchSeen[i] = room[at : at : at+n]
		at += n
	}
	var vals []dimValue
	for i, e := range d.events {
		vals = dimValues(vals[:0], e)
		pv, ev := pvEv(e)
		vdi := d.vdIndex[visitorDay{e.SiteID, d.day[i], e.Visitor}]
		for _, v := range vals {
			t.count(dimKey{e.SiteID, d.day[i], v.dim, v.key, v.value}, pv, ev, vdi)
		}
	}
	for i, e := range d.hours {
		hs := d.hourSeen[i]
		c := t.hours[hs.key]
		if c == nil {
			c = &dimCount{hash: hs.hash}
			t.hours[hs.key] = c
			t.hourOf[siteHash{hs.key.site, hs.hash}] = hs.key
		}
		pv, ev := pvEv(e)
		c.pageviews += pv
		c.events += ev
		t.batchSeen[hs.vd] = append(t.batchSeen[hs.vd], hs.hash)
	}
	return t
}

func (t *tally) count(k dimKey, pv, ev int64, vdi int) {
	c := t.counts[k]
	if c == nil {
		c = &dimCount{hash: tagDay(dimHash(k.dim, k.key, k.value), k.day)}
		t.counts[k] = c
	}
	c.pageviews += pv
	c.events += ev
	t.batchSeen[vdi] = append(t.batchSeen[vdi], c.hash)
}

// aggregate completes t with the property values (dim 16), mapped by what st read, and
// returns the rows to write and each visitor's first sightings, to store on its visits. A
// visitor adds one to a value's (an hour's) visitors only at its first sighting that
// day: a tagged hash on none of the visitor's stored visits.
func (d *days) aggregate(t *tally, st readState) (dimRows, hourRows, map[siteVisitor][]int64) {
	if len(d.props) > 0 {
		props := d.propMapping(st)
		for i, e := range d.events {
			if len(e.Props) == 0 {
				continue
			}
			pv, ev := pvEv(e)
			vdi := d.vdIndex[visitorDay{e.SiteID, d.day[i], e.Visitor}]
			for k, v := range e.Props {
				pk := propKey{e.SiteID, d.day[i], event.Cut(k, event.RollupKeyChars), event.Cut(v, event.RollupValueChars)}
				t.count(dimKey{e.SiteID, d.day[i], dimProperty, pk.key, props[pk]}, pv, ev, vdi)
			}
		}
	}
	counts, hours, hourOf, batchSeen := t.counts, t.hours, t.hourOf, t.batchSeen
	// First sightings, counted per (site, day, hash) like the stored sets name them.
	type dayHash struct {
		site int64
		day  int32
		hash int64
	}
	fresh := map[dayHash]int64{}
	added := make(map[siteVisitor][]int64, len(d.visitorDays))
	// Every visitor-day's new sightings in one array; a visitor of several days gets a
	// copy of its parts.
	total := 0
	for _, hs := range batchSeen {
		total += len(hs)
	}
	buf := make([]int64, 0, total)
	for i, vd := range d.visitorDays {
		hs := batchSeen[i]
		slices.Sort(hs)
		hs = slices.Compact(hs)
		sv := siteVisitor{vd.site, vd.visitor}
		old := st.seen[sv]
		start := len(buf)
		for _, h := range hs {
			if _, ok := slices.BinarySearch(old, h); ok {
				continue
			}
			buf = append(buf, h)
			if hk, ok := hourOf[siteHash{vd.site, h}]; ok {
				hours[hk].visitors++
			} else {
				fresh[dayHash{vd.site, vd.day, h}]++
			}
		}
		if len(buf) == start {
			continue
		}
		part := buf[start:len(buf):len(buf)]
		if prev, ok := added[sv]; ok {
			added[sv] = append(prev, part...)
		} else {
			added[sv] = part
		}
	}
	keys := make([]dimKey, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	// Sorted by key: one lock order for every writer keeps concurrent upserts from
	// deadlocking.
	slices.SortFunc(keys, func(a, b dimKey) int {
		return cmp.Or(cmp.Compare(a.site, b.site), cmp.Compare(a.day, b.day), cmp.Compare(a.dim, b.dim),
			strings.Compare(a.key, b.key), strings.Compare(a.value, b.value))
	})
	var rows dimRows
	for _, k := range keys {
		c := counts[k]
		rows.site = append(rows.site, k.site)
		rows.day = append(rows.day, dateOf(k.day))
		rows.dim = append(rows.dim, k.dim)
		rows.key = append(rows.key, k.key)
		rows.value = append(rows.value, k.value)
		rows.pageviews = append(rows.pageviews, c.pageviews)
		rows.events = append(rows.events, c.events)
		rows.visitors = append(rows.visitors, fresh[dayHash{k.site, k.day, c.hash}])
	}
	hks := make([]hourKey, 0, len(hours))
	for k := range hours {
		hks = append(hks, k)
	}
	slices.SortFunc(hks, func(a, b hourKey) int { return cmp.Or(cmp.Compare(a.site, b.site), a.hour.Compare(b.hour)) })
	var hr hourRows
	for _, k := range hks {
		c := hours[k]
		hr.site, hr.hour = append(hr.site, k.site), append(hr.hour, k.hour)
		hr.pageviews, hr.events, hr.visitors = append(hr.pageviews, c.pageviews), append(hr.events, c.events), append(hr.visitors, c.visitors)
	}
	return rows, hr, added
}

// pvEv is what an event adds to pageviews and to custom events.
func pvEv(e *event.Event) (pv, ev int64) {
	if e.IsPageview() {
		pv = 1
	}
	if e.IsInteraction() {
		ev = 1
	}
	return pv, ev
}

// hourRows are rollup_hourly increments, one array per column.
type hourRows struct {
	site                        []int64
	hour                        []time.Time
	pageviews, events, visitors []int64
}

func (r *hourRows) args() []any {
	return []any{r.site, r.hour, r.pageviews, r.events, r.visitors}
}

type dimValue struct {
	dim        int16
	key, value string
}

// dimValues appends the (dim, value) an event counts under but its properties. Empty UTM fields and
// regions are left out, and 'pageview' and 'engagement' as event names: no report shows
// them.
func dimValues(out []dimValue, e *event.Event) []dimValue {
	out = append(out, dimValue{dim: dimTotal})
	add := func(dim int16, v string, skipEmpty bool) {
		if v == "" && skipEmpty {
			return
		}
		out = append(out, dimValue{dim: dim, value: event.Cut(v, event.RollupValueChars)})
	}
	add(1, e.Path, false)
	add(2, e.Hostname, false)
	add(3, e.RefSource, false)
	add(4, e.UTMSource, true)
	add(5, e.UTMMedium, true)
	add(6, e.UTMCampaign, true)
	add(7, e.UTMTerm, true)
	add(8, e.UTMContent, true)
	add(9, e.Country, false)
	add(10, e.Region, true)
	add(11, e.Browser, false)
	add(12, e.OS, false)
	add(13, e.Device, false)
	add(14, event.ScreenClass(e.ScreenW), false)
	if e.IsInteraction() {
		add(15, e.Name, false)
	}
	return out
}

// dimHash names (dim, key, value) among a visitor's sightings: hashtextextended(dim ||
// chr(31) || key || chr(31) || value, 0), as stored since migration 000002 (tagged with
// the day since 000011).
func dimHash(dim int16, key, value string) int64 {
	var b strings.Builder
	b.Grow(8 + len(key) + len(value))
	b.WriteString(strconv.Itoa(int(dim)))
	b.WriteByte(31)
	b.WriteString(key)
	b.WriteByte(31)
	b.WriteString(value)
	return hashTextExtended(b.String(), 0)
}
