package pgutil

import (
	"bytes"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// TestCopyFieldsMatchPgx: each CopyRow method writes a field (its length, then its bytes)
// exactly as pgx's own codec encodes the value for COPY.
func TestCopyFieldsMatchPgx(t *testing.T) {
	m := pgtype.NewMap()
	str := "ünï 日本"
	at := time.Date(2026, 5, 20, 13, 4, 5, 123456789, time.FixedZone("x", 5*3600+45*60))
	id := [16]byte{0x01, 0x9a, 0xbc, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xff}
	doc := `{"plan":"pro","q":"a\"b"}`
	cases := []struct {
		oid   uint32
		value any // as pgx takes it
		write func(w *CopyRow)
	}{
		{pgtype.Int8OID, int64(-1 << 63), func(w *CopyRow) { w.Int8(-1 << 63) }},
		{pgtype.Int8OID, int64(1234567890123), func(w *CopyRow) { w.Int8(1234567890123) }},
		{pgtype.Int4OID, int32(-7), func(w *CopyRow) { w.Int4(-7) }},
		{pgtype.Int4OID, int32(1<<31 - 1), func(w *CopyRow) { w.Int4(1<<31 - 1) }},
		{pgtype.TextOID, "", func(w *CopyRow) { w.Text("") }},
		{pgtype.TextOID, str, func(w *CopyRow) { w.Text(str) }},
		{pgtype.TextOID, &str, func(w *CopyRow) { w.TextOrNull(&str) }},
		{pgtype.TextOID, (*string)(nil), func(w *CopyRow) { w.TextOrNull(nil) }},
		{pgtype.TimestamptzOID, at, func(w *CopyRow) { w.Timestamptz(at) }},
		{pgtype.TimestamptzOID, time.Date(1969, 12, 31, 23, 59, 59, 999, time.UTC), func(w *CopyRow) {
			w.Timestamptz(time.Date(1969, 12, 31, 23, 59, 59, 999, time.UTC))
		}},
		{pgtype.TimestamptzOID, &at, func(w *CopyRow) { w.TimestamptzOrNull(&at) }},
		{pgtype.TimestamptzOID, (*time.Time)(nil), func(w *CopyRow) { w.TimestamptzOrNull(nil) }},
		{pgtype.DateOID, time.Date(2026, 5, 20, 0, 0, 0, 0, time.UTC), func(w *CopyRow) { w.Date(20593) }},
		{pgtype.DateOID, time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC), func(w *CopyRow) { w.Date(-3653) }},
		{pgtype.UUIDOID, pgtype.UUID{Bytes: id, Valid: true}, func(w *CopyRow) { w.UUID(id) }},
		{pgtype.JSONBOID, &doc, func(w *CopyRow) { w.JSONB([]byte(doc)) }},
		{pgtype.JSONBOID, (*string)(nil), func(w *CopyRow) { w.JSONB(nil) }},
		{pgtype.Int8ArrayOID, []int64{5, -1, 1 << 62}, func(w *CopyRow) { w.Int8Array([]int64{5, -1, 1 << 62}) }},
		{pgtype.Int8ArrayOID, []int64{}, func(w *CopyRow) { w.Int8Array([]int64{}) }},
		{pgtype.Int8ArrayOID, []int64(nil), func(w *CopyRow) { w.Int8Array(nil) }},
	}
	for _, c := range cases {
		// pgx appends to the buffer it is given and returns nil for NULL.
		value, err := m.Encode(c.oid, pgtype.BinaryFormatCode, c.value, []byte("p"))
		if err != nil {
			t.Fatal(err)
		}
		want := []byte{0xff, 0xff, 0xff, 0xff}
		if value != nil {
			want = append(be.AppendUint32(nil, uint32(len(value)-1)), value[1:]...)
		}
		var w CopyRow
		c.write(&w)
		if !bytes.Equal(w.b, want) || w.fields != 1 || w.err != nil {
			t.Errorf("%T %v as %d:\n got %x (%d fields, %v)\nwant %x", c.value, c.value, c.oid, w.b, w.fields, w.err, want)
		}
	}
	var w CopyRow
	w.Int4(1 << 31)
	if w.err == nil {
		t.Error("an integer out of range: no error")
	}
}
