// Package ratelimit caps beacons per key (a client address, a site's secret) with
// fixed-window counters. Each
// replica counts on its own: a shared counter would put a network round trip on every
// beacon, and the limit only needs to stop one address from flooding, not be exact.
package ratelimit

import (
	"errors"
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

const shards = 64

// Limiter allows at most Limit beacons per key per window.
type Limiter[K comparable] struct {
	limit  int
	window time.Duration
	seed   maphash.Seed
	shards [shards]shard[K]
}

// shard is one lock's worth of counters. All its counters belong to one window: when a
// request arrives in a later window the whole map is dropped, which is the cleanup, so
// no sweeper goroutine is needed and memory is bounded by the addresses of one window.
type shard[K comparable] struct {
	mu     sync.Mutex
	window int64
	counts map[K]int
	_      [32]byte // keep neighbouring shards' locks off one cache line
}

// New returns a limiter of limit beacons per window.
func New[K comparable](limit int, window time.Duration) (*Limiter[K], error) {
	if limit <= 0 || window <= 0 {
		return nil, errors.New("ratelimit: limit and window must be positive")
	}
	l := &Limiter[K]{limit: limit, window: window, seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].counts = map[K]int{}
	}
	return l, nil
}

// Key is the address counted for ip: IPv6 clients are counted per /64, since one host
// commonly holds a whole /64 and could otherwise rotate addresses past the limit.
func Key(ip netip.Addr) netip.Addr {
	ip = ip.Unmap()
	if ip.Is6() {
		p, err := ip.Prefix(64)
		if err == nil {
			return p.Addr()
		}
	}
	return ip
}

// Allow counts one beacon of key at now. When over the limit it returns false and how
// long until the window ends.
func (l *Limiter[K]) Allow(key K, now time.Time) (bool, time.Duration) {
	return l.AllowN(key, 1, now)
}

// AllowN counts n beacons of key at now, all or none.
func (l *Limiter[K]) AllowN(key K, n int, now time.Time) (bool, time.Duration) {
	w := now.UnixNano() / int64(l.window)
	s := &l.shards[maphash.Comparable(l.seed, key)%shards]
	s.mu.Lock()
	if s.window != w {
		if len(s.counts) > 0 {
			s.counts = make(map[K]int, len(s.counts)/2)
		}
		s.window = w
	}
	total := s.counts[key] + n
	if total <= l.limit {
		s.counts[key] = total
	}
	s.mu.Unlock()
	if total <= l.limit {
		return true, 0
	}
	end := time.Unix(0, (w+1)*int64(l.window))
	return false, end.Sub(now)
}
