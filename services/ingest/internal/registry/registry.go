// Package registry holds ingest's in-memory copy of the site registry, kept current by a
// watch on the NATS KV bucket the query service mirrors from Postgres.
package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
)

// ErrNotLoaded means the first full load has not finished: ingest answers 503 then,
// never 401, because an unknown token is not yet known to be unknown.
var ErrNotLoaded = errors.New("site registry not loaded yet")

// Registry maps tokens and secret hashes to sites. Lookups are lock-free reads of an
// immutable map that the watcher replaces on every change.
type Registry struct {
	kv     jetstream.KeyValue
	log    *slog.Logger
	sites  atomic.Pointer[map[string]event.Site] // by registry key: token or secret hash
	loaded atomic.Bool
	mu     sync.Mutex // serialises writers of sites
}

// New returns a registry fed by kv; call Run to start watching.
func New(kv jetstream.KeyValue, log *slog.Logger) (*Registry, error) {
	if kv == nil || log == nil {
		return nil, errors.New("registry: nil dependency")
	}
	r := &Registry{kv: kv, log: log}
	empty := map[string]event.Site{}
	r.sites.Store(&empty)
	return r, nil
}

// Lookup returns the site of a public token.
func (r *Registry) Lookup(token string) (event.Site, bool, error) {
	return r.get(tokenPrefix, token)
}

// LookupSecret returns the site whose secret key is secret. Only the secret's hash is
// held, so the comparison is of hashes: a map lookup leaks nothing useful by its timing.
func (r *Registry) LookupSecret(secret string) (event.Site, bool, error) {
	return r.get(secretPrefix, event.HashSecret(secret))
}

// Keys in the map carry a one-byte kind so a token can never match a secret hash.
const (
	tokenPrefix  = 't'
	secretPrefix = 's'
)

func (r *Registry) get(kind byte, name string) (event.Site, bool, error) {
	if !r.loaded.Load() {
		return event.Site{}, false, ErrNotLoaded
	}
	var buf [128]byte
	key := append(append(buf[:0], kind), name...)
	s, ok := (*r.sites.Load())[string(key)] // the compiler does not copy key for a lookup
	return s, ok, nil
}

// mapKey is the map key of a registry KV key, ok false for keys of neither kind.
func mapKey(kvKey string) (string, bool) {
	if token, ok := event.TokenFromKey(kvKey); ok {
		return string(tokenPrefix) + token, true
	}
	if hash, ok := event.SecretHashFromKey(kvKey); ok {
		return string(secretPrefix) + hash, true
	}
	return "", false
}

// Loaded reports whether the first full load has finished.
func (r *Registry) Loaded() bool { return r.loaded.Load() }

// Len returns how many registry entries (tokens and secrets) are known.
func (r *Registry) Len() int { return len(*r.sites.Load()) }

// Run watches the bucket until ctx ends. The watch replays every current key, then marks
// the end of the replay with a nil entry, after which lookups are answered. The watch
// survives NATS reconnects on its own.
func (r *Registry) Run(ctx context.Context) error {
	w, err := r.kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch site registry: %w", err)
	}
	defer w.Stop() //nolint:errcheck
	pending := map[string]event.Site{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("site registry watch closed")
			}
			if e == nil {
				r.replace(pending)
				pending = nil
				r.loaded.Store(true)
				r.log.Info("site registry loaded", "sites", r.Len())
				continue
			}
			r.apply(pending, e)
		}
	}
}

func (r *Registry) replace(m map[string]event.Site) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sites.Store(&m)
}

// apply adds one change: to pending during the initial replay, else to a copy of the
// live map. Copy-on-write keeps lookups lock-free; site changes are rare.
func (r *Registry) apply(pending map[string]event.Site, e jetstream.KeyValueEntry) {
	token, ok := mapKey(e.Key())
	if !ok {
		return
	}
	var site event.Site
	del := e.Operation() != jetstream.KeyValuePut
	if !del {
		s, err := event.DecodeSite(e.Value())
		if err != nil {
			r.log.Error("bad site registry entry", "key_revision", e.Revision(), "err", err)
			return
		}
		site = s
	}
	if pending != nil {
		if del {
			delete(pending, token)
		} else {
			pending[token] = site
		}
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.sites.Load()
	next := make(map[string]event.Site, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	if del {
		delete(next, token)
	} else {
		next[token] = site
	}
	r.sites.Store(&next)
}
