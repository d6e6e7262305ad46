package pgutil_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgerrcode"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/haru-analytics/haru/pkg/pgtest"
	"github.com/haru-analytics/haru/pkg/pgutil"
)

// TestCopyFrom COPYs rows of every type CopyRow writes, many more than one read of the
// connection takes, and reads them back; a row that fails, a row of the wrong width and a
// duplicate key each fail the whole COPY with their own error and leave nothing behind.
func TestCopyFrom(t *testing.T) {
	db := pgtest.New(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE copied (
		id bigint PRIMARY KEY, n integer, s text, ns text, ts timestamptz, nts timestamptz,
		d date, u uuid, doc jsonb, arr bigint[])`); err != nil {
		t.Fatal(err)
	}
	cols := []string{"id", "n", "s", "ns", "nts", "doc", "ts", "d", "u", "arr"} // row's order
	base := time.Date(2026, 5, 20, 13, 4, 5, 123456000, time.UTC)
	const n = 20_000
	row := func(w *pgutil.CopyRow, i int) {
		s := fmt.Sprintf("/page/%d/%s", i, strings.Repeat("ü", i%50))
		ts := base.Add(time.Duration(i) * time.Second)
		w.Int8(int64(i))
		w.Int4(int64(-i))
		w.Text(s)
		if i%2 == 0 {
			w.TextOrNull(&s)
			w.TimestamptzOrNull(&ts)
			w.JSONB(fmt.Appendf(nil, `{"i":"%d"}`, i))
		} else {
			w.TextOrNull(nil)
			w.TimestamptzOrNull(nil)
			w.JSONB(nil)
		}
		w.Timestamptz(ts)
		w.Date(int32(20000 + i%1000))
		w.UUID([16]byte{byte(i >> 8), byte(i)})
		w.Int8Array([]int64{int64(i), -int64(i)}[:i%3])
	}
	copyRows := func(n int, row func(w *pgutil.CopyRow, i int)) (int64, error) {
		var got int64
		err := db.Pool.AcquireFunc(ctx, func(c *pgxpool.Conn) (err error) {
			got, err = pgutil.CopyFrom(ctx, c.Conn().PgConn(), "copied", cols, n, row)
			return err
		})
		return got, err
	}
	if got, err := copyRows(n, row); err != nil || got != n {
		t.Fatalf("copy: %d rows, %v", got, err)
	}
	var count, bad int64
	err := db.Pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE NOT (
		n = -id AND s = '/page/' || id || '/' || repeat('ü', (id % 50)::int)
		AND ts = $1::timestamptz + id * interval '1 second'
		AND ns IS NOT DISTINCT FROM (CASE WHEN id % 2 = 0 THEN s END)
		AND nts IS NOT DISTINCT FROM (CASE WHEN id % 2 = 0 THEN ts END)
		AND doc IS NOT DISTINCT FROM (CASE WHEN id % 2 = 0 THEN jsonb_build_object('i', id::text) END)
		AND d = date '1970-01-01' + (20000 + id % 1000)::int
		AND u = (lpad(to_hex(id), 4, '0') || repeat('0', 28))::uuid
		AND arr = (ARRAY[id, -id])[1:(id % 3)::int]
	)) FROM copied`, base).Scan(&count, &bad)
	if err != nil {
		t.Fatal(err)
	}
	if count != n || bad != 0 {
		t.Fatalf("%d rows read back, %d of them not as written", count, bad)
	}

	fault := errors.New("no such row")
	if _, err := copyRows(10, func(w *pgutil.CopyRow, i int) {
		row(w, n+i)
		if i == 7 {
			w.Fail(fault)
		}
	}); !errors.Is(err, fault) {
		t.Errorf("a failed row: %v, want %v", err, fault)
	}
	if _, err := copyRows(10, func(w *pgutil.CopyRow, i int) {
		row(w, n+i)
		if i == 3 {
			w.Int8(1)
		}
	}); err == nil || !strings.Contains(err.Error(), "11 fields for 10 columns") {
		t.Errorf("a row too wide: %v", err)
	}
	var pgErr *pgconn.PgError
	if _, err := copyRows(10, func(w *pgutil.CopyRow, i int) { row(w, n-5+i) }); !errors.As(err, &pgErr) || pgErr.Code != pgerrcode.UniqueViolation {
		t.Errorf("a duplicate key: %v, want a unique violation", err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM copied`).Scan(&count); err != nil || count != n {
		t.Errorf("after the failed copies: %d rows (%v), want %d", count, err, n)
	}
}
