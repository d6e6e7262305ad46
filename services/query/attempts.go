package query

import (
	"sync"
	"time"
)

// attempts is a set of token buckets by key (an IP, an email, a share link): each key may
// spend burst attempts at once and regains one every per. It lives in one process: with
// several query replicas behind a balancer each enforces its own budget.
type attempts struct {
	burst float64
	per   time.Duration
	now   func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxBuckets bounds its memory: beyond it, buckets that have refilled are
// dropped (they are equivalent to no bucket).
const maxBuckets = 100_000

func newAttempts(burst int, per time.Duration, now func() time.Time) *attempts {
	return &attempts{burst: float64(burst), per: per, now: now, buckets: map[string]*bucket{}}
}

// allow spends one attempt of key and reports whether it had one left.
func (l *attempts) allow(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			l.prune(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+float64(now.Sub(b.at))/float64(l.per))
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func (l *attempts) prune(now time.Time) {
	for k, b := range l.buckets {
		if b.tokens+float64(now.Sub(b.at))/float64(l.per) >= l.burst {
			delete(l.buckets, k)
		}
	}
}
