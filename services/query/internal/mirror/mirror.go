// Package mirror copies the sites table into the NATS KV site registry that ingest reads:
// one entry per site token and one per site secret hash.
// Postgres is the source of truth. Changes reach the mirror three ways: a full reconcile
// at start, a pg_notify from the sites trigger on every change by any process, and a
// periodic full reconcile that repairs anything missed (a notification lost while the
// listening connection was down, a key deleted by hand).
package mirror

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/haru-analytics/haru/pkg/event"
)

// Channel is the pg_notify channel the sites trigger signals on.
const Channel = "haru_sites"

// Mirror keeps the registry bucket equal to the sites table.
type Mirror struct {
	pool     *pgxpool.Pool
	kv       jetstream.KeyValue
	log      *slog.Logger
	interval time.Duration

	mu      sync.Mutex
	current map[string]event.Site // what the bucket holds, as last seen
	synced  atomic.Bool
}

// New returns a mirror that fully reconciles every interval.
func New(pool *pgxpool.Pool, kv jetstream.KeyValue, log *slog.Logger, interval time.Duration) (*Mirror, error) {
	if pool == nil || kv == nil || log == nil {
		return nil, errors.New("mirror: nil dependency")
	}
	return &Mirror{pool: pool, kv: kv, log: log, interval: interval, current: map[string]event.Site{}}, nil
}

// Synced reports whether a full reconcile has completed.
func (m *Mirror) Synced() bool { return m.synced.Load() }

// Run mirrors until ctx ends.
func (m *Mirror) Run(ctx context.Context) error {
	backoff := time.Second
	for ctx.Err() == nil {
		err := m.listen(ctx)
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("site mirror: listen failed; retrying", "retry_in", backoff.String(), "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
	return nil
}

// listen holds one connection with LISTEN, reconciling fully first (notifications sent
// before LISTEN took effect would otherwise be lost) and then per notified site.
func (m *Mirror) listen(ctx context.Context) error {
	conn, err := m.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+Channel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	defer func() {
		// A connection still listening must not return to the pool.
		_, _ = conn.Exec(context.WithoutCancel(ctx), "UNLISTEN *")
	}()
	if err := m.Reconcile(ctx); err != nil {
		return err
	}
	next := time.Now().Add(m.interval)
	for {
		wctx, cancel := context.WithDeadline(ctx, next)
		n, err := conn.Conn().WaitForNotification(wctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			id, perr := strconv.ParseInt(n.Payload, 10, 64)
			if perr != nil {
				continue
			}
			if err := m.ReconcileSite(ctx, id); err != nil {
				return err
			}
		case errors.Is(err, context.DeadlineExceeded):
			if err := m.Reconcile(ctx); err != nil {
				return err
			}
			next = time.Now().Add(m.interval)
		default:
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

const selectSites = `SELECT id, token, domain, timezone, allow_any_host, version,
	COALESCE(encode(secret_hash, 'hex'), '') FROM sites`

// Reconcile makes the bucket equal to the sites table: puts what differs, deletes what
// the table no longer has. It compares with the bucket as read now, so a key deleted or
// changed behind the mirror's back is repaired too.
func (m *Mirror) Reconcile(ctx context.Context) error {
	if err := m.loadCurrent(ctx); err != nil {
		return err
	}
	want, err := m.query(ctx, selectSites)
	if err != nil {
		return err
	}
	if err := m.apply(ctx, want, func(event.Site) bool { return true }); err != nil {
		return err
	}
	if !m.synced.Swap(true) {
		m.log.Info("site registry mirrored", "sites", len(want))
	}
	return nil
}

// ReconcileSite mirrors one site: its current token and secret are put, any other token
// or secret of it (a rotated one, or all of a deleted site's) deleted.
func (m *Mirror) ReconcileSite(ctx context.Context, id int64) error {
	want, err := m.query(ctx, selectSites+` WHERE id = $1`, id)
	if err != nil {
		return err
	}
	return m.apply(ctx, want, func(s event.Site) bool { return s.ID == id })
}

func (m *Mirror) query(ctx context.Context, sql string, args ...any) (map[string]event.Site, error) {
	rows, err := m.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("query sites: %w", err)
	}
	want := map[string]event.Site{}
	var s event.Site
	_, err = pgx.ForEachRow(rows, []any{&s.ID, &s.Token, &s.Domain, &s.Timezone, &s.AllowAnyHost, &s.Version, &s.SecretHash}, func() error {
		want[event.SiteKey(s.Token)] = s
		if s.SecretHash != "" {
			want[event.SecretKey(s.SecretHash)] = s
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("query sites: %w", err)
	}
	return want, nil
}

// apply puts every entry of want that differs from the bucket and deletes the bucket's
// entries in scope that want lacks.
func (m *Mirror) apply(ctx context.Context, want map[string]event.Site, inScope func(event.Site) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for key, s := range want {
		if cur, ok := m.current[key]; ok && cur == s {
			continue
		}
		b, err := event.EncodeSite(s)
		if err != nil {
			return err
		}
		if _, err := m.kv.Put(ctx, key, b); err != nil {
			return fmt.Errorf("put site %d: %w", s.ID, err)
		}
		m.current[key] = s
	}
	for key, s := range m.current {
		if _, ok := want[key]; ok || !inScope(s) {
			continue
		}
		if err := m.kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("delete site %d: %w", s.ID, err)
		}
		delete(m.current, key)
	}
	return nil
}

// loadCurrent reads what the bucket holds now, so a reconcile (the first after a
// restart included) neither rewrites every key nor misses one deleted, changed or left
// stale behind the mirror's back.
func (m *Mirror) loadCurrent(ctx context.Context) error {
	w, err := m.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read site registry: %w", err)
	}
	defer w.Stop() //nolint:errcheck
	m.mu.Lock()
	defer m.mu.Unlock()
	current := map[string]event.Site{}
	for e := range w.Updates() {
		if e == nil {
			m.current = current
			return nil
		}
		s, err := event.DecodeSite(e.Value())
		if err != nil {
			// Unreadable: a site no table row equals, so the reconcile rewrites or deletes it.
			current[e.Key()] = event.Site{ID: -1}
			continue
		}
		current[e.Key()] = s
	}
	return errors.New("read site registry: watch closed")
}
