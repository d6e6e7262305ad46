package store

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// sideLockTimeout bounds how long a side read waits for visitors' locks, so a writer
// never hangs on a lock whatever goes wrong elsewhere; the batch is then retried.
var sideLockTimeout = "30s"

// sideRead is a batch's rollup reads, done on a second connection while the first
// inserts the batch's events. Its transaction takes the visitors' locks before the first
// event is inserted, reads the state the rollups depend on, and holds the locks until
// release, after the batch's transaction has ended: other writers see the same exclusion
// as if one transaction read and wrote.
type sideRead struct {
	locked, done chan struct{}
	cancel       context.CancelFunc
	lockErr      error
	p            *prepared
	st           readState
	vp           visitPlan
	agg          aggregated
	err          error
	conn         *pgxpool.Conn
	tx           pgx.Tx
}

// startSideRead takes the buckets' locks and reads the state of w's rollups.
func (s *Store) startSideRead(ctx context.Context, w work, locks []int32) *sideRead {
	ctx, cancel := context.WithCancel(ctx)
	r := &sideRead{locked: make(chan struct{}), done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(r.done)
		r.lockErr = r.lock(ctx, s, locks)
		close(r.locked)
		if r.lockErr != nil {
			r.err = r.lockErr
			return
		}
		r.read(ctx, s, w)
	}()
	return r
}

func (r *sideRead) lock(ctx context.Context, s *Store, locks []int32) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("side read: %w", err)
	}
	r.conn = conn
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("side read: %w", err)
	}
	r.tx = tx
	b := &pgx.Batch{}
	b.Queue("SET LOCAL lock_timeout = '" + sideLockTimeout + "'")
	b.Queue(s.q.lockVisitors, locks)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("lock visitors: %w", err)
	}
	return nil
}

// waitLocked returns once the visitors' locks are held, or taking them failed.
func (r *sideRead) waitLocked() error {
	<-r.locked
	return r.lockErr
}

// reread replaces the reads by those for w, after the events turned out not all new.
func (r *sideRead) reread(ctx context.Context, s *Store, w work) {
	<-r.done
	if r.err != nil {
		return
	}
	r.read(ctx, s, w)
}

// read reads the state of w's rollups and aggregates its dimensions, all of it while the
// batch's events may still be inserting.
func (r *sideRead) read(ctx context.Context, s *Store, w work) {
	r.p = prepare(w)
	r.st, r.vp, r.err = s.readState(ctx, r.tx, w, r.p)
	if r.err == nil {
		r.agg = aggregate(r.p, r.st)
	}
}

// release ends the side transaction, freeing its locks; it is safe to call again. Reads
// still running (the batch's transaction failed first) are cancelled.
func (r *sideRead) release() {
	if r == nil {
		return
	}
	r.cancel()
	<-r.done
	if r.tx != nil {
		_ = r.tx.Rollback(context.Background())
		r.tx = nil
	}
	if r.conn != nil {
		r.conn.Release()
		r.conn = nil
	}
}

// applyRead writes in tx the rollups the side read prepared.
func (s *Store) applyRead(ctx context.Context, tx pgx.Tx, r *sideRead) error {
	ctx, span := s.tracer.Start(ctx, "rollups")
	defer span.End()
	<-r.done
	if r.err != nil {
		return r.err
	}
	return s.writeRollups(ctx, tx, r.p, r.st, r.vp, &r.agg)
}
