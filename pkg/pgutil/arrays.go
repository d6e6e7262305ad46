package pgutil

import (
	"reflect"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// RegisterFastArrays makes m encode the array parameters the writer sends by the ten
// thousand (one array per column of a batch) straight from plain Go slices: text[] from
// []string and []*string, bigint[] from []int64, int[] from []int32, smallint[] from
// []int16, timestamptz[] from []time.Time and []*time.Time, date[] from []time.Time (the
// date of each time in its own location) and uuid[] from []pgtype.UUID. pgx's generic
// array encoder boxes every element in an interface and looks its plan up again; these
// write Postgres's binary array format in one pass, byte for byte what pgx writes
// (TestFastArraysMatchPgx). Every other value goes to pgx's own codec, as does decoding.
func RegisterFastArrays(m *pgtype.Map) {
	for _, oid := range []uint32{pgtype.TextArrayOID, pgtype.Int8ArrayOID, pgtype.Int4ArrayOID,
		pgtype.Int2ArrayOID, pgtype.TimestamptzArrayOID, pgtype.DateArrayOID, pgtype.UUIDArrayOID} {
		t, ok := m.TypeForOID(oid)
		if !ok {
			continue
		}
		if _, done := t.Codec.(fastArrayCodec); done {
			continue
		}
		m.RegisterType(&pgtype.Type{Name: t.Name, OID: t.OID, Codec: fastArrayCodec{Codec: t.Codec}})
	}
}

// fastArrayCodec is pgx's array codec for one array type, with a binary encoder of its own
// for the matching Go slice, and for bigint[] a binary decoder into []int64 (the
// writer reads its visitors' first sightings as such arrays).
type fastArrayCodec struct{ pgtype.Codec }

func (c fastArrayCodec) PlanScan(m *pgtype.Map, oid uint32, format int16, target any) pgtype.ScanPlan {
	if _, ok := target.(*[]int64); ok && oid == pgtype.Int8ArrayOID && format == pgtype.BinaryFormatCode {
		return scanFastInt8Array{}
	}
	return c.Codec.PlanScan(m, oid, format, target)
}

// scanFastInt8Array decodes a one-dimensional bigint[] without NULLs into a []int64 in
// one pass, where pgx goes through a generic array and an element plan per value; any
// other shape goes to pgx's own decoding. NULL is a nil slice, as pgx has it.
type scanFastInt8Array struct{}

// other decodes src as pgx does, through a map of its own (a Map is not safe for
// concurrent use, and this is the rare case).
func (scanFastInt8Array) other(src []byte, target any) error {
	return pgtype.NewMap().Scan(pgtype.Int8ArrayOID, pgtype.BinaryFormatCode, src, target)
}

func (p scanFastInt8Array) Scan(src []byte, target any) error {
	dst := target.(*[]int64)
	if src == nil {
		*dst = nil
		return nil
	}
	if len(src) < 12 {
		return p.other(src, target)
	}
	ndim, hasNull := be.Uint32(src), be.Uint32(src[4:])
	if ndim == 0 && hasNull == 0 {
		*dst = []int64{}
		return nil
	}
	if ndim != 1 || hasNull != 0 || len(src) < 20 {
		return p.other(src, target)
	}
	n := int(be.Uint32(src[12:]))
	body := src[20:]
	if n < 0 || len(body) != 12*n {
		return p.other(src, target)
	}
	out := make([]int64, n)
	for i := range out {
		if be.Uint32(body[12*i:]) != 8 {
			return p.other(src, target)
		}
		out[i] = int64(be.Uint64(body[12*i+4:]))
	}
	*dst = out
	return nil
}

func (c fastArrayCodec) PlanEncode(m *pgtype.Map, oid uint32, format int16, value any) pgtype.EncodePlan {
	if format == pgtype.BinaryFormatCode {
		switch value.(type) {
		case []string, []*string:
			if oid == pgtype.TextArrayOID {
				return encodeFastArray{elem: pgtype.TextOID}
			}
		case []int64:
			if oid == pgtype.Int8ArrayOID {
				return encodeFastArray{elem: pgtype.Int8OID}
			}
		case []int32:
			if oid == pgtype.Int4ArrayOID {
				return encodeFastArray{elem: pgtype.Int4OID}
			}
		case []int16:
			if oid == pgtype.Int2ArrayOID {
				return encodeFastArray{elem: pgtype.Int2OID}
			}
		case []time.Time:
			switch oid {
			case pgtype.TimestamptzArrayOID:
				return encodeFastArray{elem: pgtype.TimestamptzOID}
			case pgtype.DateArrayOID:
				return encodeFastArray{elem: pgtype.DateOID}
			}
		case []*time.Time:
			if oid == pgtype.TimestamptzArrayOID {
				return encodeFastArray{elem: pgtype.TimestamptzOID}
			}
		case []pgtype.UUID:
			if oid == pgtype.UUIDArrayOID {
				return encodeFastArray{elem: pgtype.UUIDOID}
			}
		}
	}
	return c.Codec.PlanEncode(m, oid, format, value)
}

type encodeFastArray struct{ elem uint32 }

// secondsToY2K is Postgres's epoch, 2000-01-01 UTC, in Unix seconds.
const secondsToY2K = 946684800

// sinceY2K is t as Postgres stores a timestamptz: microseconds since its epoch.
func sinceY2K(t time.Time) int64 {
	return t.Unix()*1000000 + int64(t.Nanosecond())/1000 - secondsToY2K*1000000
}

// Encode writes value as a one-dimensional binary array: the header (dimensions, whether
// any element is NULL, the element type, length and lower bound 1), then each element as
// its length and bytes. A nil slice is NULL, as pgx has it.
func (p encodeFastArray) Encode(value any, buf []byte) ([]byte, error) {
	// Once per array: the slice's nil-ness and length, whatever its element type.
	rv := reflect.ValueOf(value)
	if rv.IsNil() {
		return nil, nil
	}
	n := rv.Len()
	buf = be.AppendUint32(buf, 1)
	hasNull := len(buf)
	buf = be.AppendUint32(buf, 0)
	buf = be.AppendUint32(buf, p.elem)
	buf = be.AppendUint32(buf, uint32(n))
	buf = be.AppendUint32(buf, 1)
	switch v := value.(type) {
	case []string:
		size := 0
		for _, s := range v {
			size += 4 + len(s)
		}
		buf = slices.Grow(buf, size)
		for _, s := range v {
			buf = be.AppendUint32(buf, uint32(len(s)))
			buf = append(buf, s...)
		}
	case []*string:
		for _, s := range v {
			if s == nil {
				buf = be.AppendUint32(buf, 0xFFFFFFFF)
				be.PutUint32(buf[hasNull:], 1)
				continue
			}
			buf = be.AppendUint32(buf, uint32(len(*s)))
			buf = append(buf, *s...)
		}
	case []int64:
		buf = slices.Grow(buf, 12*n)
		for _, x := range v {
			buf = be.AppendUint32(buf, 8)
			buf = be.AppendUint64(buf, uint64(x))
		}
	case []int32:
		buf = slices.Grow(buf, 8*n)
		for _, x := range v {
			buf = be.AppendUint32(buf, 4)
			buf = be.AppendUint32(buf, uint32(x))
		}
	case []int16:
		buf = slices.Grow(buf, 6*n)
		for _, x := range v {
			buf = be.AppendUint32(buf, 2)
			buf = be.AppendUint16(buf, uint16(x))
		}
	case []time.Time:
		if p.elem == pgtype.DateOID {
			buf = slices.Grow(buf, 8*n)
			for _, t := range v {
				day := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC).Unix()
				buf = be.AppendUint32(buf, 4)
				buf = be.AppendUint32(buf, uint32(int32((day-secondsToY2K)/86400)))
			}
			break
		}
		buf = slices.Grow(buf, 12*n)
		for _, t := range v {
			buf = be.AppendUint32(buf, 8)
			buf = be.AppendUint64(buf, uint64(sinceY2K(t)))
		}
	case []*time.Time:
		for _, t := range v {
			if t == nil {
				buf = be.AppendUint32(buf, 0xFFFFFFFF)
				be.PutUint32(buf[hasNull:], 1)
				continue
			}
			buf = be.AppendUint32(buf, 8)
			buf = be.AppendUint64(buf, uint64(sinceY2K(*t)))
		}
	case []pgtype.UUID:
		buf = slices.Grow(buf, 20*n)
		for _, u := range v {
			if !u.Valid {
				buf = be.AppendUint32(buf, 0xFFFFFFFF)
				be.PutUint32(buf[hasNull:], 1)
				continue
			}
			buf = be.AppendUint32(buf, 16)
			buf = append(buf, u.Bytes[:]...)
		}
	}
	return buf, nil
}
