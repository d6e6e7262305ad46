// Package uacache remembers what ingest learnt from recent User-Agent strings. Parsing a
// User-Agent and checking it for bot marks costs microseconds, and real traffic repeats a
// few hundred browser versions over and over, so the verdict is worth keeping.
//
// The cache holds no User-Agent text: entries are keyed by a 64-bit hash under a seed
// chosen at start, so nothing of a visitor's request outlives it. Two strings sharing a
// hash would share a verdict; among the few thousand entries kept, the chance of that
// is below one in a million million.
package uacache

import (
	"errors"
	"hash/maphash"
	"sync"
)

// Cache maps a User-Agent to the value compute gives for it, keeping the most recently
// used ones. It holds two generations of at most size entries each: a hit in the older
// one moves the entry to the current one, and when the current one is full it becomes
// the older one and the oldest is dropped whole. That is nearly LRU with a plain map
// read under a read lock on a hit.
type Cache[V any] struct {
	seed    maphash.Seed
	size    int
	compute func(string) V

	mu   sync.RWMutex
	cur  map[uint64]V
	prev map[uint64]V
}

// New returns a cache of about 2×size entries over compute, which must be safe for
// concurrent use and give the same value for the same string.
func New[V any](size int, compute func(string) V) (*Cache[V], error) {
	if size <= 0 || compute == nil {
		return nil, errors.New("uacache: want a positive size and a compute function")
	}
	return &Cache[V]{seed: maphash.MakeSeed(), size: size, compute: compute, cur: make(map[uint64]V, size)}, nil
}

// Get returns compute(ua), from the cache when ua was seen recently.
func (c *Cache[V]) Get(ua string) V {
	key := maphash.String(c.seed, ua)
	c.mu.RLock()
	v, ok := c.cur[key]
	if ok {
		c.mu.RUnlock()
		return v
	}
	v, old := c.prev[key]
	c.mu.RUnlock()
	if !old {
		v = c.compute(ua)
	}
	c.mu.Lock()
	c.add(key, v)
	c.mu.Unlock()
	return v
}

// add stores v in the current generation, turning it over first when full; mu is held.
func (c *Cache[V]) add(key uint64, v V) {
	if _, ok := c.cur[key]; ok {
		return // another caller stored it meanwhile
	}
	if len(c.cur) >= c.size {
		c.prev, c.cur = c.cur, make(map[uint64]V, c.size)
	}
	c.cur[key] = v
}

// Len is how many entries the cache holds.
func (c *Cache[V]) Len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.cur) + len(c.prev)
}
