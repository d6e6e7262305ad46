package store

import (
	"encoding/binary"
	"math/bits"
)

// hashTextExtended is Postgres's hashtextextended(text, seed) for a deterministic
// collation: Bob Jenkins' lookup3 as in src/common/hashfn.c (hash_bytes_extended), read
// little-endian. Computing it in Go keeps the writer's hashes identical to those earlier
// versions computed in SQL, so the first sightings they stored stay valid (migration
// 000011 carried them onto the visits).
func hashTextExtended(s string, seed uint64) int64 {
	k := []byte(s)
	n := uint32(len(k))
	a := 0x9e3779b9 + n + 3923095
	b, c := a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	for len(k) >= 12 {
		a += binary.LittleEndian.Uint32(k)
		b += binary.LittleEndian.Uint32(k[4:])
		c += binary.LittleEndian.Uint32(k[8:])
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The tail: bytes 8..10 go to c above its lowest byte, which lookup3 keeps for the
	// length; 4..7 to b; 0..3 to a.
	for i := len(k) - 1; i >= 0; i-- {
		switch {
		case i >= 8:
			c += uint32(k[i]) << (8 * (i - 7))
		case i >= 4:
			b += uint32(k[i]) << (8 * (i - 4))
		default:
			a += uint32(k[i]) << (8 * i)
		}
	}
	_, b, c = final(a, b, c)
	return int64(uint64(b)<<32 | uint64(c))
}

func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

func final(a, b, c uint32) (uint32, uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return a, b, c
}
