package store

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/pkg/pgtest"
)

func TestPipeline(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE pipe_t (n int PRIMARY KEY, s text)`); err != nil {
		t.Fatal(err)
	}
	const ins = `INSERT INTO pipe_t SELECT * FROM unnest($1::int[], $2::text[])`
	const div = `INSERT INTO pipe_t VALUES (100 / $1::int, 'x')`

	t.Run("all statements run, flushed or not", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			pl, err := startPipeline(ctx, tx, ins)
			if err != nil {
				return err
			}
			pl.send(ins, []int32{1, 2}, []string{"a", "b"})
			pl.flush()
			pl.send(ins, []int32{3}, []string{"c"})
			return pl.close()
		})
		if err != nil {
			t.Fatal(err)
		}
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pipe_t`).Scan(&n); err != nil || n != 3 {
			t.Fatalf("rows %d (%v), want 3", n, err)
		}
	})

	t.Run("a failing statement fails the transaction and leaves the connection usable", func(t *testing.T) {
		conn, err := db.Pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			pl, err := startPipeline(ctx, tx, ins, div)
			if err != nil {
				return err
			}
			pl.send(ins, []int32{10}, []string{"j"})
			pl.send(div, int32(0))
			pl.send(ins, []int32{11}, []string{"k"})
			return pl.close()
		})
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "22012" {
			t.Fatalf("err %v, want division_by_zero", err)
		}
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pipe_t WHERE n >= 10`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("after the failed transaction: %d rows (%v), want 0 and a working connection", n, err)
		}
	})

	t.Run("arguments that cannot be encoded fail the transaction", func(t *testing.T) {
		err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
			pl, err := startPipeline(ctx, tx, ins)
			if err != nil {
				return err
			}
			pl.send(ins, []int32{20}, []string{"t"})
			pl.send(ins, "not an array", []string{"u"})
			return pl.close()
		})
		if err == nil {
			t.Fatal("want an encoding error")
		}
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM pipe_t WHERE n >= 20`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("rows %d (%v), want 0", n, err)
		}
	})
}

// TestSideReadLockTimeout holds every visitor lock bucket from another session: the
// batch fails after the side read's lock timeout, not a data error (so it is retried,
// never dead-lettered), gives both connections back, and succeeds once the locks are
// free, counted once.
func TestSideReadLockTimeout(t *testing.T) {
	defer func(old string) { sideLockTimeout = old }(sideLockTimeout)
	sideLockTimeout = "300ms"
	st, pool := newStore(t)
	sites, tz := newSites(t, pool, "UTC")
	r := rand.New(rand.NewPCG(9, 10))
	events := randomEvents(t, r, sites, 200, time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC), 1)
	ctx := context.Background()

	holder, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.Exec(ctx, `SELECT pg_advisory_xact_lock(1751220854, k) FROM generate_series(0, $1 - 1) k`, visitorLockBuckets); err != nil {
		t.Fatal(err)
	}
	_, err = st.Write(ctx, append([]event.Event{}, events...))
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" || IsDataError(err) {
		t.Fatalf("write with the visitors locked elsewhere: %v; want lock_not_available, not a data error", err)
	}
	if n := pool.Stat().AcquiredConns(); n != 1 {
		t.Fatalf("%d connections held after the failed write, want 1 (the lock holder's)", n)
	}
	if err := holder.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if res := write(t, st, append([]event.Event{}, events...)); res.Inserted != len(events) {
		t.Fatalf("retry inserted %d, want %d", res.Inserted, len(events))
	}
	if diff := cmp.Diff(recount(t, events, tz), takeSnapshot(t, pool)); diff != "" {
		t.Fatalf("rollups differ from a recount (-want +got):\n%s", diff)
	}
}
