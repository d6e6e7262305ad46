// Package salt hands out the daily visitor-hash salts: 32 random bytes per calendar date,
// created once in NATS KV with an atomic create so every ingest replica uses the same
// salt, and expired by the bucket's TTL after three days.
package salt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Size is the length of a salt in bytes.
const Size = 32

// Salt is one date's salt.
type Salt [Size]byte

// Store caches the salts it has read; at any instant at most three dates are in use
// (the world's timezones span about two days), so the cache stays tiny.
type Store struct {
	kv      jetstream.KeyValue
	timeout time.Duration
	mu      sync.RWMutex
	cache   map[string]Salt
}

// New returns a store over the salts bucket whose reads and writes of the bucket give up
// after timeout. A cached salt needs neither, so the hot path sets no timer.
func New(kv jetstream.KeyValue, timeout time.Duration) (*Store, error) {
	if kv == nil || timeout <= 0 {
		return nil, errors.New("salt: nil bucket or no timeout")
	}
	return &Store{kv: kv, timeout: timeout, cache: map[string]Salt{}}, nil
}

// ForDate returns the salt of date (YYYY-MM-DD), creating it if no replica has yet.
func (s *Store) ForDate(ctx context.Context, date string) (Salt, error) {
	s.mu.RLock()
	v, ok := s.cache[date]
	s.mu.RUnlock()
	if ok {
		return v, nil
	}
	v, err := s.load(ctx, date)
	if err != nil {
		return Salt{}, err
	}
	s.mu.Lock()
	s.cache[date] = v
	if len(s.cache) > 8 {
		s.evictOldest()
	}
	s.mu.Unlock()
	return v, nil
}

func (s *Store) load(ctx context.Context, date string) (Salt, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	var fresh Salt
	if _, err := rand.Read(fresh[:]); err != nil {
		return Salt{}, fmt.Errorf("generate salt: %w", err)
	}
	_, err := s.kv.Create(ctx, date, fresh[:])
	if err == nil {
		return fresh, nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return Salt{}, fmt.Errorf("create salt: %w", err)
	}
	// Another replica created it first: use theirs.
	e, err := s.kv.Get(ctx, date)
	if err != nil {
		return Salt{}, fmt.Errorf("read salt: %w", err)
	}
	var got Salt
	if len(e.Value()) != Size {
		return Salt{}, fmt.Errorf("read salt: %d bytes, want %d", len(e.Value()), Size)
	}
	copy(got[:], e.Value())
	return got, nil
}

// evictOldest drops the lexically smallest, that is the oldest, date. Caller holds mu.
func (s *Store) evictOldest() {
	oldest := ""
	for d := range s.cache {
		if oldest == "" || d < oldest {
			oldest = d
		}
	}
	delete(s.cache, oldest)
}
