package store

import (
	"testing"
	"time"

	"github.com/haru-analytics/haru/pkg/event"
)

// TestMergeVisitsReplacement: a new event that extends a stored visit updates it in
// place, one that bridges two stored visits keeps the earlier and deletes the later, and
// one far from both opens a new visit; a stored visit left as it was is not written.
func TestMergeVisitsReplacement(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	zones := map[int64]*time.Location{1: time.UTC}
	stored := func(visitor int64, start, end time.Time) visit {
		page := "/"
		return visit{site: 1, visitor: visitor, start: start, end: end, day: dayOf(start, time.UTC), pageviews: 1,
			entry: &page, entryAt: &start, exit: &page, exitAt: &start}
	}
	at := func(visitor int64, ts time.Time) *event.Event {
		e := newEvent(t, ts, 1, event.PageviewName, visitor)
		e.Path = "/next"
		return &e
	}
	taken := []visit{
		stored(1, t0, t0.Add(5*time.Minute)),                            // extended
		stored(2, t0, t0.Add(time.Minute)),                              // bridged: kept, grows
		stored(2, t0.Add(50*time.Minute), t0.Add(55*time.Minute)),       // bridged: merged away
		stored(3, t0, t0.Add(time.Minute)),                              // untouched
		stored(3, t0.Add(3*time.Hour), t0.Add(3*time.Hour+time.Minute)), // far from visitor 3's event
	}
	evs := []*event.Event{at(1, t0.Add(20*time.Minute)), at(2, t0.Add(25*time.Minute)), at(3, t0.Add(90*time.Minute))}
	merged := mergeVisits(taken, evs, zones)
	gone, changed, fresh := replaceVisits(taken, merged)
	keys := func(vs []visit) map[visitKey]bool {
		m := map[visitKey]bool{}
		for i := range vs {
			m[vs[i].key()] = true
		}
		return m
	}
	want := func(name string, got []visit, ks ...visitKey) {
		t.Helper()
		g := keys(got)
		if len(g) != len(ks) {
			t.Fatalf("%s: %d visits %v, want %v", name, len(g), g, ks)
		}
		for _, k := range ks {
			if !g[k] {
				t.Fatalf("%s: missing %v in %v", name, k, g)
			}
		}
	}
	want("gone", gone, visitKey{1, 2, t0.Add(50 * time.Minute)})
	want("changed", changed, visitKey{1, 1, t0}, visitKey{1, 2, t0})
	want("fresh", fresh, visitKey{1, 3, t0.Add(90 * time.Minute)})
	for _, c := range changed {
		if c.visitor == 2 && (c.pageviews != 3 || !c.end.Equal(t0.Add(55*time.Minute)) || *c.exit != "/") {
			t.Fatalf("bridged visit %+v: want 3 pageviews ending at 10:55 on /", c)
		}
	}
}
