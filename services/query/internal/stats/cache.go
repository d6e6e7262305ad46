package stats

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Past days are settled: an event is stamped with its ingest time, so only today's
// rollups still grow (a rebuild recomputes past days from the same raw events). A
// breakdown over a long range is therefore its past days' rows, aggregated once and kept
// for a while, plus today's rows read fresh: a 12-month panel costs one day's read
// after its first view, and a live refresh as much.
const (
	// pastCacheRows bounds the rows kept, whatever the sites' sizes.
	pastCacheRows = 1_000_000
	pastCacheTTL  = 10 * time.Minute
)

type pastKey struct {
	site       int64
	dim        string
	from, upto string
}

type pastEntry[V any] struct {
	v       V
	rows    int
	expires time.Time
}

// pastCache holds what was computed over past days: the complete rows of breakdowns from
// the rollups, and whole results from raw events; size bounds the rows it keeps.
type pastCache[K comparable, V any] struct {
	size int
	ttl  time.Duration

	mu      sync.Mutex
	entries map[K]pastEntry[V]
	rows    int
}

func newPastCache[K comparable, V any](size int, ttl time.Duration) *pastCache[K, V] {
	return &pastCache[K, V]{size: size, ttl: ttl, entries: map[K]pastEntry[V]{}}
}

func (c *pastCache[K, V]) get(k K, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok || now.After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put keeps v, which holds rows rows, under k.
func (c *pastCache[K, V]) put(k K, v V, rows int, now time.Time) {
	if rows > c.size/4 {
		return // a result that big is read each time rather than crowd out the rest
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.rows+rows > c.size {
		for key, e := range c.entries { // drop the expired, or else everything
			if now.After(e.expires) {
				c.rows -= e.rows
				delete(c.entries, key)
			}
		}
		if c.rows+rows > c.size {
			clear(c.entries)
			c.rows = 0
		}
	}
	if old, ok := c.entries[k]; ok {
		c.rows -= old.rows
	}
	c.entries[k] = pastEntry[V]{v: v, rows: rows, expires: now.Add(c.ttl)}
	c.rows += rows
}

// minPastDays is the shortest past range worth caching: shorter ones read fast.
const minPastDays = 3

// rollupRows are every row of breakdown d over the whole local days of p, ranked: the
// past days' from the cache when it holds them, the rest read now.
func (q *Querier) rollupRows(ctx context.Context, site int64, p Period, d dimension, now time.Time) ([]row, error) {
	today := p.today(now)
	from, to := p.fromDay(), p.toDay()
	split := min(to, today.Format(time.DateOnly))
	if split <= from || !today.AddDate(0, 0, -minPastDays).After(p.From) {
		return q.panelRows(ctx, site, from, to, d)
	}
	k := pastKey{site: site, dim: d.name, from: from, upto: split}
	past, ok := q.past.get(k, now)
	if !ok {
		var err error
		if past, err = q.panelRows(ctx, site, from, split, d); err != nil {
			return nil, err
		}
		q.past.put(k, past, len(past), now)
	}
	if split >= to {
		return past, nil
	}
	recent, err := q.panelRows(ctx, site, split, to, d)
	if err != nil {
		return nil, err
	}
	return mergeRows(past, recent, d.visit), nil
}

// panelRows reads every row of breakdown d over the local days [from, to).
func (q *Querier) panelRows(ctx context.Context, site int64, from, to string, d dimension) ([]row, error) {
	rs, err := q.query(ctx, rollupPanel(site, from, to, d, 0, 0), false)
	if err != nil {
		return nil, err
	}
	out := make([]row, len(rs))
	for i, r := range rs {
		out[i] = row{r.label, r.t}
	}
	return out, nil
}

// mergeRows adds two breakdowns' rows by value and ranks the sum.
func mergeRows(a, b []row, visit bool) []row {
	out := sumRows(a, b)
	sortRows(out, visit)
	return out
}

// sumRows adds two breakdowns' rows by value, in a new slice, unranked.
func sumRows(a, b []row) []row {
	at := make(map[string]int, len(a)+len(b))
	out := slices.Clone(a)
	for i, r := range out {
		at[r.value] = i
	}
	for _, r := range b {
		if i, ok := at[r.value]; ok {
			out[i].t.add(r.t)
			continue
		}
		at[r.value] = len(out)
		out = append(out, r)
	}
	return out
}

// pageOf is one page of ranked rows; limit 0 keeps every row from offset.
func pageOf(rs []row, limit, offset int) []row {
	if limit == 0 {
		limit = len(rs)
	}
	if offset >= len(rs) {
		return []row{}
	}
	return rs[offset:min(len(rs), offset+limit)]
}
