package pgutil

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// CopyRow is one row of a COPY in Postgres's binary format, written a field at a time in
// the order of the COPY's columns. Each method writes the binary form of one column type,
// byte for byte what pgx writes for it (TestCopyFieldsMatchPgx).
type CopyRow struct {
	b      []byte
	fields int
	err    error
}

var be = binary.BigEndian

// null writes a NULL field.
func (w *CopyRow) null() {
	w.b = be.AppendUint32(w.b, 0xFFFFFFFF)
	w.fields++
}

// Int8 writes a bigint.
func (w *CopyRow) Int8(v int64) {
	w.b = be.AppendUint32(w.b, 8)
	w.b = be.AppendUint64(w.b, uint64(v))
	w.fields++
}

// Int4 writes an integer; a v outside its range fails the row.
func (w *CopyRow) Int4(v int64) {
	if v < math.MinInt32 || v > math.MaxInt32 {
		w.fail(fmt.Errorf("column %d: %d is out of range for integer", w.fields+1, v))
	}
	w.b = be.AppendUint32(w.b, 4)
	w.b = be.AppendUint32(w.b, uint32(int32(v)))
	w.fields++
}

// Text writes a text.
func (w *CopyRow) Text(s string) {
	w.b = be.AppendUint32(w.b, uint32(len(s)))
	w.b = append(w.b, s...)
	w.fields++
}

// TextOrNull writes *s, or NULL for nil.
func (w *CopyRow) TextOrNull(s *string) {
	if s == nil {
		w.null()
		return
	}
	w.Text(*s)
}

// Timestamptz writes t as a timestamptz.
func (w *CopyRow) Timestamptz(t time.Time) {
	w.b = be.AppendUint32(w.b, 8)
	w.b = be.AppendUint64(w.b, uint64(sinceY2K(t)))
	w.fields++
}

// TimestamptzOrNull writes *t, or NULL for nil.
func (w *CopyRow) TimestamptzOrNull(t *time.Time) {
	if t == nil {
		w.null()
		return
	}
	w.Timestamptz(*t)
}

// daysToY2K is Postgres's epoch, 2000-01-01, in days since 1970-01-01.
const daysToY2K = secondsToY2K / 86400

// Date writes a date given as days since 1970-01-01.
func (w *CopyRow) Date(days int32) {
	w.b = be.AppendUint32(w.b, 4)
	w.b = be.AppendUint32(w.b, uint32(days-daysToY2K))
	w.fields++
}

// UUID writes a uuid.
func (w *CopyRow) UUID(id [16]byte) {
	w.b = be.AppendUint32(w.b, 16)
	w.b = append(w.b, id[:]...)
	w.fields++
}

// JSONB writes doc, a JSON document, as a jsonb; nil is NULL.
func (w *CopyRow) JSONB(doc []byte) {
	if doc == nil {
		w.null()
		return
	}
	w.b = be.AppendUint32(w.b, uint32(1+len(doc)))
	w.b = append(w.b, 1) // jsonb's binary format version
	w.b = append(w.b, doc...)
	w.fields++
}

// Int8Array writes v as a one-dimensional bigint[]; nil is NULL.
func (w *CopyRow) Int8Array(v []int64) {
	if v == nil {
		w.null()
		return
	}
	at := len(w.b)
	w.b = be.AppendUint32(w.b, 0)
	w.b, _ = encodeFastArray{elem: pgtype.Int8OID}.Encode(v, w.b) // a non-nil []int64 never fails
	be.PutUint32(w.b[at:], uint32(len(w.b)-at-4))
	w.fields++
}

// Fail fails the row, and with it the COPY, with err.
func (w *CopyRow) Fail(err error) { w.fail(err) }

func (w *CopyRow) fail(err error) {
	if w.err == nil {
		w.err = err
	}
}

// CopyFrom copies n rows into table's columns by one COPY FROM STDIN in the binary
// format and returns how many went in. row(w, i) writes row i, one field per column in
// columns' order, with the method of each column's type.
//
// pgx's CopyFrom takes rows as interface values and looks up an encoder for each of them
// (a quarter of the writer's CPU time went there); this writes each field directly, so it
// is for tables whose column types the caller knows, which a COPY checks: a field of the
// wrong type or size fails it. Rows are encoded as the connection asks for data, about
// 64 KiB at a time, so a large COPY is never held whole in memory.
func CopyFrom(ctx context.Context, conn *pgconn.PgConn, table string, columns []string, n int, row func(w *CopyRow, i int)) (int64, error) {
	var sql strings.Builder
	sql.WriteString("COPY ")
	sql.WriteString(pgx.Identifier{table}.Sanitize())
	sql.WriteString(" (")
	for i, c := range columns {
		if i > 0 {
			sql.WriteString(", ")
		}
		sql.WriteString(pgx.Identifier{c}.Sanitize())
	}
	sql.WriteString(") FROM STDIN BINARY")
	r := &copyReader{n: n, cols: len(columns), row: row}
	r.w.b = append(make([]byte, 0, 96<<10), "PGCOPY\n\377\r\n\000"...)
	r.w.b = be.AppendUint32(r.w.b, 0) // flags
	r.w.b = be.AppendUint32(r.w.b, 0) // header extension length
	tag, err := conn.CopyFrom(ctx, r, sql.String())
	if r.err != nil {
		// The COPY failed because a row could not be written: that is the reason,
		// not Postgres's report of the COPY cancelled.
		return 0, r.err
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// copyReader is a COPY's data, each row encoded when the connection reads up to it.
type copyReader struct {
	w    CopyRow
	off  int // w.b[off:] is yet to be read
	i, n int // row i is the next to encode, of n; i == n+1 once the trailer is written
	cols int
	row  func(w *CopyRow, i int)
	err  error
}

func (r *copyReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if len(r.w.b)-r.off < len(p) && r.i <= r.n {
		r.w.b = r.w.b[:copy(r.w.b, r.w.b[r.off:])]
		r.off = 0
		for len(r.w.b) < len(p) && r.i <= r.n {
			if r.i == r.n {
				r.w.b = be.AppendUint16(r.w.b, 0xFFFF) // the trailer
				r.i++
				break
			}
			r.w.b = be.AppendUint16(r.w.b, uint16(r.cols))
			r.w.fields = 0
			r.row(&r.w, r.i)
			if r.w.err == nil && r.w.fields != r.cols {
				r.w.err = fmt.Errorf("wrote %d fields for %d columns", r.w.fields, r.cols)
			}
			if r.w.err != nil {
				r.err = fmt.Errorf("copy row %d: %w", r.i, r.w.err)
				return 0, r.err
			}
			r.i++
		}
	}
	if r.off == len(r.w.b) {
		return 0, io.EOF
	}
	k := copy(p, r.w.b[r.off:])
	r.off += k
	return k, nil
}
