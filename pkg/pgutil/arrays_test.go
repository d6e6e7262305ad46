package pgutil

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// arrayCases are values of every slice RegisterFastArrays takes, with their array types.
func arrayCases(s string, n int64, t time.Time) []struct {
	oid   uint32
	value any
} {
	str := s
	u := pgtype.UUID{Bytes: [16]byte{1, 2, 3, byte(n)}, Valid: true}
	return []struct {
		oid   uint32
		value any
	}{
		{pgtype.TextArrayOID, []string{s, "", "ünï 日本", s + s}},
		{pgtype.TextArrayOID, []string{}},
		{pgtype.TextArrayOID, []string(nil)},
		{pgtype.TextArrayOID, []*string{&str, nil, &str}},
		{pgtype.TextArrayOID, []*string{&str}},
		{pgtype.Int8ArrayOID, []int64{n, 0, -n, 1 << 62, -1 << 63}},
		{pgtype.Int8ArrayOID, []int64{}},
		{pgtype.Int4ArrayOID, []int32{int32(n), -1, 1<<31 - 1}},
		{pgtype.Int2ArrayOID, []int16{int16(n), -1, 1<<15 - 1}},
		{pgtype.TimestamptzArrayOID, []time.Time{t, t.Add(-time.Nanosecond), time.Date(1969, 12, 31, 23, 59, 59, 999, time.UTC),
			time.Date(1, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{pgtype.TimestamptzArrayOID, []*time.Time{&t, nil, &t}},
		{pgtype.TimestamptzArrayOID, []*time.Time{&t}},
		{pgtype.DateArrayOID, []time.Time{t, time.Date(1999, 12, 31, 23, 0, 0, 0, time.FixedZone("z", -3600)),
			time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC), t.In(time.FixedZone("k", 14*3600))}},
		{pgtype.UUIDArrayOID, []pgtype.UUID{u, {}, u}},
		{pgtype.UUIDArrayOID, []pgtype.UUID{u}},
	}
}

// checkArrays: each case encodes to the very bytes pgx's own codec writes.
func checkArrays(t *testing.T, s string, n int64, ts time.Time) {
	t.Helper()
	plain, fast := pgtype.NewMap(), pgtype.NewMap()
	RegisterFastArrays(fast)
	RegisterFastArrays(fast) // twice is harmless
	for _, c := range arrayCases(s, n, ts) {
		want, err := plain.Encode(c.oid, pgtype.BinaryFormatCode, c.value, []byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fast.PlanEncode(c.oid, pgtype.BinaryFormatCode, c.value).(encodeFastArray); !ok {
			t.Fatalf("%T as %d: not the fast plan", c.value, c.oid)
		}
		got, err := fast.Encode(c.oid, pgtype.BinaryFormatCode, c.value, []byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) || (got == nil) != (want == nil) {
			t.Fatalf("%T %v as %d:\n got %x\nwant %x", c.value, c.value, c.oid, got, want)
		}
	}
}

func TestFastArraysMatchPgx(t *testing.T) {
	checkArrays(t, "hello", 42, time.Date(2026, 11, 29, 3, 4, 5, 123456789, time.UTC))
	checkArrays(t, "", -7, time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.FixedZone("y", -5*3600)))
}

func FuzzFastArraysMatchPgx(f *testing.F) {
	f.Add("x", int64(1), int64(0))
	f.Add("ünï\x00", int64(-1)<<40, int64(-1)<<62)
	f.Fuzz(func(t *testing.T, s string, n, ns int64) {
		checkArrays(t, s, n, time.Unix(0, ns))
	})
}

// TestFastInt8ArrayScanMatchesPgx: bigint[] decodes into []int64 as pgx's own codec
// decodes it, through the fast plan, for every shape it takes, and through pgx's for the
// rest (two dimensions, NULL elements).
func TestFastInt8ArrayScanMatchesPgx(t *testing.T) {
	plain, fast := pgtype.NewMap(), pgtype.NewMap()
	RegisterFastArrays(fast)
	var x []int64
	if _, ok := fast.PlanScan(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, &x).(scanFastInt8Array); !ok {
		t.Fatal("bigint[] into *[]int64: not the fast plan")
	}
	one := int64(1)
	for _, value := range []any{
		[]int64{1, 0, -1, 1 << 62, -1 << 63}, []int64{}, []int64(nil), []int64{42},
		[][]int64{{1, 2}, {3, 4}}, []*int64{&one, nil},
	} {
		raw, err := plain.Encode(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, value, nil)
		if err != nil {
			t.Fatal(err)
		}
		var want, got []int64
		wantErr := plain.Scan(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, raw, &want)
		gotErr := fast.Scan(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, raw, &got)
		if (wantErr == nil) != (gotErr == nil) || fmt.Sprintf("%#v", want) != fmt.Sprintf("%#v", got) {
			t.Fatalf("%v: got %#v (%v), pgx %#v (%v)", value, got, gotErr, want, wantErr)
		}
	}
}

// TestFastArraysLeaveTheRest: other values, the text format and decoding still go to
// pgx's codec.
func TestFastArraysLeaveTheRest(t *testing.T) {
	m := pgtype.NewMap()
	RegisterFastArrays(m)
	for _, c := range []struct {
		oid    uint32
		format int16
		value  any
	}{
		{pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, []int32{1}},
		{pgtype.TextArrayOID, pgtype.BinaryFormatCode, pgtype.FlatArray[string]{"a"}},
		{pgtype.TextArrayOID, pgtype.TextFormatCode, []string{"a"}},
		{pgtype.DateArrayOID, pgtype.BinaryFormatCode, []*time.Time{nil}},
	} {
		plan := m.PlanEncode(c.oid, c.format, c.value)
		if plan == nil {
			t.Fatalf("%T as %d: no plan", c.value, c.oid)
		}
		if _, fast := plan.(encodeFastArray); fast {
			t.Fatalf("%T as %d format %d: took the fast plan", c.value, c.oid, c.format)
		}
	}
	raw, err := m.Encode(pgtype.TextArrayOID, pgtype.BinaryFormatCode, []string{"a", "b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var back []string
	if err := m.Scan(pgtype.TextArrayOID, pgtype.BinaryFormatCode, raw, &back); err != nil || fmt.Sprint(back) != "[a b]" {
		t.Fatalf("decode: %v %v", back, err)
	}
}

func BenchmarkArrayEncode(b *testing.B) {
	const n = 10000
	strs, ints, times := make([]string, n), make([]int64, n), make([]time.Time, n)
	now := time.Now()
	for i := range n {
		strs[i], ints[i], times[i] = fmt.Sprintf("/path/%d", i), int64(i)*7919, now.Add(time.Duration(i)*time.Millisecond)
	}
	for _, m := range []struct {
		name string
		fast bool
	}{{"pgx", false}, {"fast", true}} {
		b.Run(m.name, func(b *testing.B) {
			tm := pgtype.NewMap()
			if m.fast {
				RegisterFastArrays(tm)
			}
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = buf[:0]
				var err error
				for _, a := range []struct {
					oid uint32
					v   any
				}{{pgtype.TextArrayOID, strs}, {pgtype.Int8ArrayOID, ints}, {pgtype.TimestamptzArrayOID, times}} {
					if buf, err = tm.Encode(a.oid, pgtype.BinaryFormatCode, a.v, buf); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(3*n), "ns/element")
		})
	}
}
