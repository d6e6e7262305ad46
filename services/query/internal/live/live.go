// Package live fans "updated" signals from the writer out to open dashboard streams.
// One core NATS subscription serves every stream of the process; each stream holds a
// one-slot channel, so a burst of updates coalesces into one refresh and a slow viewer
// never blocks the others.
package live

import (
	"errors"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/haru-analytics/haru/pkg/event"
)

// Hub routes updates to subscribers by site.
type Hub struct {
	mu     sync.Mutex
	subs   map[int64]map[*Sub]struct{}
	closed chan struct{}
	once   sync.Once
	count  int
}

// Sub is one open stream's subscription.
type Sub struct {
	hub  *Hub
	site int64
	// C receives a signal when the site has new data; it holds at most one.
	C chan event.Updated
}

// NewHub returns an empty hub.
func NewHub() *Hub {
	return &Hub{subs: map[int64]map[*Sub]struct{}{}, closed: make(chan struct{})}
}

// Subscribe listens to updated messages on subject (a wildcard over every site) until
// the returned subscription is unsubscribed.
func (h *Hub) Subscribe(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	if nc == nil {
		return nil, errors.New("live: nil nats connection")
	}
	return nc.Subscribe(subject, func(m *nats.Msg) {
		u, err := event.DecodeUpdated(m.Data)
		if err != nil {
			return
		}
		h.Publish(u)
	})
}

// Publish hands u to every subscriber of its site without blocking.
func (h *Hub) Publish(u event.Updated) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs[u.SiteID] {
		select {
		case s.C <- u:
		default: // a refresh is already pending; it will read the newest data
		}
	}
}

// Add subscribes to site's updates.
func (h *Hub) Add(site int64) *Sub {
	s := &Sub{hub: h, site: site, C: make(chan event.Updated, 1)}
	h.mu.Lock()
	if h.subs[site] == nil {
		h.subs[site] = map[*Sub]struct{}{}
	}
	h.subs[site][s] = struct{}{}
	h.count++
	h.mu.Unlock()
	return s
}

// Remove unsubscribes s.
func (s *Sub) Remove() {
	h := s.hub
	h.mu.Lock()
	if set := h.subs[s.site]; set != nil {
		if _, ok := set[s]; ok {
			delete(set, s)
			h.count--
		}
		if len(set) == 0 {
			delete(h.subs, s.site)
		}
	}
	h.mu.Unlock()
}

// Len returns how many streams are subscribed.
func (h *Hub) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count
}

// Closing is closed when the process shuts down; streams end when they see it.
func (h *Hub) Closing() <-chan struct{} { return h.closed }

// Close ends every stream; HTTP shutdown would otherwise wait on them.
func (h *Hub) Close() { h.once.Do(func() { close(h.closed) }) }
