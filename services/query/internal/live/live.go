// Package live fans "updated" signals from the writer out to open dashboard streams.
//
// One core NATS subscription serves every stream of the process. When a site changes,
// the hub computes each distinct view of it (a period, later filters) once, however many
// viewers watch that view, and hands the same bytes to each. At most one refresh per site
// runs at a time; updates arriving meanwhile coalesce into one trailing refresh, so a
// burst of commits costs two computations, not one per commit.
package live

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/haru-analytics/haru/pkg/event"
)

// ComputeFunc renders a view of a site as the payload its streams send.
type ComputeFunc func(ctx context.Context, site int64, view string) ([]byte, error)

// Hub routes updates to subscribers by site and view.
type Hub struct {
	compute ComputeFunc
	timeout time.Duration
	onError func(site int64, view string, err error)

	mu    sync.Mutex
	sites map[int64]*siteState
	count int

	closed chan struct{}
	once   sync.Once
}

type siteState struct {
	subs map[*Sub]struct{}
	// views counts the subscriptions of each distinct view.
	views      map[string]int
	refreshing bool
	dirty      bool
}

// Sub is one open stream's subscription.
type Sub struct {
	hub  *Hub
	site int64
	view string
	// C receives the newest rendering of the view; it holds at most one, so a slow
	// viewer skips to the latest figures instead of queueing stale ones.
	C chan []byte
}

// NewHub returns a hub that renders views with compute, each call bounded by timeout;
// onError is told of failed renders.
func NewHub(compute ComputeFunc, timeout time.Duration, onError func(site int64, view string, err error)) *Hub {
	return &Hub{compute: compute, timeout: timeout, onError: onError,
		sites: map[int64]*siteState{}, closed: make(chan struct{})}
}

// Subscribe listens to updated messages on subject (a wildcard over every site).
func (h *Hub) Subscribe(nc *nats.Conn, subject string) (*nats.Subscription, error) {
	if nc == nil {
		return nil, errors.New("live: nil nats connection")
	}
	return nc.Subscribe(subject, func(m *nats.Msg) {
		u, err := event.DecodeUpdated(m.Data)
		if err != nil {
			return
		}
		h.Publish(u.SiteID)
	})
}

// Publish schedules a refresh of every view of site that has viewers. It never blocks.
func (h *Hub) Publish(site int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.sites[site]
	if st == nil {
		return
	}
	if st.refreshing {
		st.dirty = true
		return
	}
	st.refreshing = true
	go h.refresh(site)
}

// PublishAll schedules a refresh of every site that has viewers. Updates sent while
// NATS was away are lost to this process, so after a reconnect every open view is
// computed afresh rather than left behind until the site's next update.
func (h *Hub) PublishAll() {
	h.mu.Lock()
	sites := make([]int64, 0, len(h.sites))
	for id := range h.sites {
		sites = append(sites, id)
	}
	h.mu.Unlock()
	for _, id := range sites {
		h.Publish(id)
	}
}

// refresh renders each distinct view of site once and delivers it, repeating while
// updates arrived during the previous round.
func (h *Hub) refresh(site int64) {
	for {
		h.mu.Lock()
		st := h.sites[site]
		if st == nil {
			h.mu.Unlock()
			return
		}
		st.dirty = false
		views := map[string][]*Sub{}
		for s := range st.subs {
			views[s.view] = append(views[s.view], s)
		}
		h.mu.Unlock()

		for view, subs := range views {
			ctx, cancel := context.WithTimeout(context.Background(), h.timeout)
			payload, err := h.compute(ctx, site, view)
			cancel()
			if err != nil {
				if h.onError != nil {
					h.onError(site, view, err)
				}
				continue
			}
			for _, s := range subs {
				s.deliver(payload)
			}
		}

		h.mu.Lock()
		st = h.sites[site]
		if st == nil {
			h.mu.Unlock()
			return
		}
		if !st.dirty {
			st.refreshing = false
			h.mu.Unlock()
			return
		}
		h.mu.Unlock()
	}
}

func (s *Sub) deliver(payload []byte) {
	for {
		select {
		case s.C <- payload:
			return
		default:
		}
		select { // replace the stale pending payload with the newer one
		case <-s.C:
		default:
		}
	}
}

// Add subscribes to view of site.
func (h *Hub) Add(site int64, view string) (*Sub, error) {
	s := &Sub{hub: h, site: site, view: view, C: make(chan []byte, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.sites[site]
	if st == nil {
		st = &siteState{subs: map[*Sub]struct{}{}, views: map[string]int{}}
		h.sites[site] = st
	}
	if st.views[view] == 0 && len(st.views) >= MaxViewsPerSite {
		return nil, ErrTooManyViews
	}
	st.subs[s] = struct{}{}
	st.views[view]++
	h.count++
	return s, nil
}

// MaxViewsPerSite bounds the distinct views of one site watched at once. Each is
// computed afresh on every update of the site, one after another: without a bound,
// whoever may watch a site (a public share link) could open views with ever other
// filters until its refreshes took a core. Viewers of a view already open always join.
const MaxViewsPerSite = 64

// ErrTooManyViews refuses a new distinct view of a site already watched in
// MaxViewsPerSite views.
var ErrTooManyViews = errors.New("too many different live views of this site are open")

// Remove unsubscribes s; safe to call twice.
func (s *Sub) Remove() {
	h := s.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.sites[s.site]
	if st == nil {
		return
	}
	if _, ok := st.subs[s]; ok {
		delete(st.subs, s)
		if st.views[s.view]--; st.views[s.view] == 0 {
			delete(st.views, s.view)
		}
		h.count--
	}
	if len(st.subs) == 0 {
		delete(h.sites, s.site)
	}
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
