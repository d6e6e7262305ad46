package store

import (
	"slices"
	"strconv"
	"strings"

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

// days holds the daily side of a batch: each event's local day, the visitor-days whose
// first sightings it may add and the property values it carries.
type days struct {
	events      []*event.Event
	day         []int32 // of events[i]
	visitorDays []visitorDay
	vdIndex     map[visitorDay]int
	props       []propKey
	propIndex   map[propKey]int
}

func newDays(w work) *days {
	d := &days{events: w.dims, day: make([]int32, len(w.dims)), vdIndex: map[visitorDay]int{}, propIndex: map[propKey]int{}}
	for i, e := range w.dims {
		day := dayOf(e.Time, w.zones[e.SiteID])
		d.day[i] = day
		vd := visitorDay{e.SiteID, day, e.Visitor}
		if _, ok := d.vdIndex[vd]; !ok {
			d.vdIndex[vd] = len(d.visitorDays)
			d.visitorDays = append(d.visitorDays, vd)
		}
		for k, v := range e.Props {
			pk := propKey{e.SiteID, day, cut(k, 200), cut(v, 1000)}
			if _, ok := d.propIndex[pk]; !ok {
				d.propIndex[pk] = len(d.props)
				d.props = append(d.props, pk)
			}
		}
	}
	return d
}

func (d *days) seenArgs() []any {
	n := len(d.visitorDays)
	site, day, visitor := make([]int64, n), make([]any, n), make([]int64, n)
	for i, vd := range d.visitorDays {
		site[i], day[i], visitor[i] = vd.site, dateOf(vd.day), vd.visitor
	}
	return []any{site, day, visitor}
}

func (d *days) propArgs() []any {
	n := len(d.props)
	site, day, key, value := make([]int64, n), make([]any, n), make([]string, n), make([]string, n)
	for i, p := range d.props {
		site[i], day[i], key[i], value[i] = p.site, dateOf(p.day), p.key, p.value
	}
	return []any{site, day, key, value}
}

// propMapping maps each property value of the batch to the value counted: itself, or
// otherValue once its property has maxPropValues values that day. New values are
// admitted in value order, as earlier versions did in SQL.
func (d *days) propMapping(st readState) map[propKey]string {
	type group struct {
		site int64
		day  int32
		key  string
	}
	fresh := map[group][]string{}
	used := map[group]int64{}
	out := make(map[propKey]string, len(d.props))
	for i, p := range d.props {
		if st.propKnown[i] {
			out[p] = p.value
			continue
		}
		g := group{p.site, p.day, p.key}
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
	day                         []any
	dim                         []int16
	key, value                  []string
	pageviews, events, visitors []int64
}

func (r *dimRows) args() []any {
	return []any{r.site, r.day, r.dim, r.key, r.value, r.pageviews, r.events, r.visitors}
}

// seenRows are visitor_days rows to store: row i's hashes are hashes[lo[i]-1:hi[i]].
type seenRows struct {
	keys   []visitorDay
	hashes []int64
	lo, hi []int32
}

func (r *seenRows) args() []any {
	n := len(r.keys)
	site, day, visitor := make([]int64, n), make([]any, n), make([]int64, n)
	for i, vd := range r.keys {
		site[i], day[i], visitor[i] = vd.site, dateOf(vd.day), vd.visitor
	}
	return []any{site, day, visitor, r.hashes, r.lo, r.hi}
}

// aggregate expands every event into its dimension values and sums them per (site, day,
// dim, key, value). A visitor adds one to a value's visitors only at its first sighting
// that day: a hash of (dim, key, value) not yet in the visitor's seen set.
func (d *days) aggregate(st readState) (dimRows, seenRows) {
	props := map[propKey]string{}
	if len(d.props) > 0 {
		props = d.propMapping(st)
	}
	counts := map[dimKey]*dimCount{}
	batchSeen := make([][]int64, len(d.visitorDays))
	hashes := map[dimKey]int64{}
	var vals []dimValue
	for i, e := range d.events {
		vals = dimValues(vals[:0], e, props, d.day[i])
		pv, ev := int64(0), int64(0)
		if e.IsPageview() {
			pv = 1
		}
		if e.IsInteraction() {
			ev = 1
		}
		vdi := d.vdIndex[visitorDay{e.SiteID, d.day[i], e.Visitor}]
		for _, v := range vals {
			k := dimKey{e.SiteID, d.day[i], v.dim, v.key, v.value}
			c := counts[k]
			if c == nil {
				h, ok := hashes[k]
				if !ok {
					h = dimHash(v.dim, v.key, v.value)
					hashes[k] = h
				}
				c = &dimCount{hash: h}
				counts[k] = c
			}
			c.pageviews += pv
			c.events += ev
			batchSeen[vdi] = append(batchSeen[vdi], c.hash)
		}
	}
	// First sightings, counted per (site, day, hash) like the stored sets name them.
	type dayHash struct {
		site int64
		day  int32
		hash int64
	}
	fresh := map[dayHash]int64{}
	var seen seenRows
	for i, vd := range d.visitorDays {
		hs := batchSeen[i]
		slices.Sort(hs)
		hs = slices.Compact(hs)
		old := st.seen[i]
		var added []int64
		for _, h := range hs {
			if !contains(old, h) {
				added = append(added, h)
				fresh[dayHash{vd.site, vd.day, h}]++
			}
		}
		if len(added) == 0 {
			continue
		}
		seen.keys = append(seen.keys, vd)
		seen.lo = append(seen.lo, int32(len(seen.hashes)+1))
		seen.hashes = append(append(seen.hashes, old...), added...)
		seen.hi = append(seen.hi, int32(len(seen.hashes)))
	}
	var rows dimRows
	for k, c := range counts {
		rows.site = append(rows.site, k.site)
		rows.day = append(rows.day, dateOf(k.day))
		rows.dim = append(rows.dim, k.dim)
		rows.key = append(rows.key, k.key)
		rows.value = append(rows.value, k.value)
		rows.pageviews = append(rows.pageviews, c.pageviews)
		rows.events = append(rows.events, c.events)
		rows.visitors = append(rows.visitors, fresh[dayHash{k.site, k.day, c.hash}])
	}
	return rows, seen
}

// contains reports whether unsorted hs holds h; a visitor's set is small.
func contains(hs []int64, h int64) bool { return slices.Contains(hs, h) }

type dimValue struct {
	dim        int16
	key, value string
}

// dimValues appends the (dim, key, value) an event counts under. Empty UTM fields and
// regions are left out, and 'pageview' and 'engagement' as event names: no report shows
// them.
func dimValues(out []dimValue, e *event.Event, props map[propKey]string, day int32) []dimValue {
	out = append(out, dimValue{dim: dimTotal})
	add := func(dim int16, v string, skipEmpty bool) {
		if v == "" && skipEmpty {
			return
		}
		out = append(out, dimValue{dim: dim, value: cut(v, 1000)})
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
	add(14, screenOf(e.ScreenW), false)
	if e.IsInteraction() {
		add(15, e.Name, false)
	}
	for k, v := range e.Props {
		pk := propKey{e.SiteID, day, cut(k, 200), cut(v, 1000)}
		out = append(out, dimValue{dim: dimProperty, key: pk.key, value: props[pk]})
	}
	return out
}

// screenOf names the class of a screen width, as the dashboard groups them.
func screenOf(w int) string {
	switch {
	case w <= 0:
		return ""
	case w < 576:
		return "mobile"
	case w < 992:
		return "tablet"
	case w < 1440:
		return "laptop"
	}
	return "desktop"
}

// dimHash names (dim, key, value) in visitor_days.seen: hashtextextended(dim || chr(31)
// || key || chr(31) || value, 0), as stored since migration 000002.
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

// cut keeps the first n characters of s, as Postgres's left(s, n).
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := 0
	for j := range s {
		if i == n {
			return s[:j]
		}
		i++
	}
	return s
}
