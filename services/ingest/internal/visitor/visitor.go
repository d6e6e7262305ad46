// Package visitor derives the cookieless visitor id: a keyed hash of site, IP and
// User-Agent under the salt of the site's local date. The id cannot be reversed to the IP,
// and once the salt expires, not even recomputed.
package visitor

import (
	"encoding/binary"
	"net/netip"
	"strconv"
	"time"

	"github.com/dchest/siphash"
	"github.com/google/uuid"

	"github.com/haru-analytics/haru/services/ingest/internal/salt"
)

// key folds the 32-byte salt into SipHash's 128-bit key so every salt byte matters.
func key(s salt.Salt) (k0, k1 uint64) {
	k0 = binary.LittleEndian.Uint64(s[0:8]) ^ binary.LittleEndian.Uint64(s[16:24])
	k1 = binary.LittleEndian.Uint64(s[8:16]) ^ binary.LittleEndian.Uint64(s[24:32])
	return k0, k1
}

// ID returns the visitor id. SipHash-2-4 is a keyed PRF built for short inputs: fast on
// the hot path and, without the key, not invertible or linkable across days. The input
// is the site id, the address as text and the User-Agent, NUL-separated.
func ID(s salt.Salt, site int64, ip netip.Addr, userAgent string) int64 {
	k0, k1 := key(s)
	// On the stack for any ordinary User-Agent.
	var arr [384]byte
	buf := strconv.AppendInt(arr[:0], site, 10)
	buf = append(buf, 0)
	if ip.IsValid() {
		buf = ip.AppendTo(buf)
	} else {
		buf = append(buf, "invalid IP"...) // what ip.String() says, as ids were first made
	}
	buf = append(buf, 0)
	buf = append(buf, userAgent...)
	return int64(siphash.Hash(k0, k1, buf))
}

// EventID is the id of an event whose sender numbered it (the tracker's send id i, the
// time it first sent the event): a keyed hash of the visitor and the body as sent, i
// included. Every retry of the event sends the same body and so gets the same id, and
// the stream drops a retry of an event it stored although its sender never learnt so
// (a lost answer, a PubAck too late). Two events sent in the same millisecond (an
// engagement report and the next pageview, two custom events) differ in their bodies;
// only byte-identical beacons of one visitor in one millisecond are one event. A UUID of
// version 8 (RFC 9562: custom), 122 bits of SipHash-2-4-128.
func EventID(s salt.Salt, site, visitor int64, body []byte) uuid.UUID {
	k0, k1 := key(s)
	var arr [512]byte
	buf := binary.LittleEndian.AppendUint64(arr[:0], uint64(site))
	buf = binary.LittleEndian.AppendUint64(buf, uint64(visitor))
	buf = append(buf, body...)
	h0, h1 := siphash.Hash128(k0, k1, buf)
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[0:8], h0)
	binary.BigEndian.PutUint64(id[8:16], h1)
	id[6] = id[6]&0x0f | 0x80 // version 8
	id[8] = id[8]&0x3f | 0x80 // RFC 9562 variant
	return id
}

// LocalDate is the calendar date at t in the site's timezone, the key of the salt that
// applies: a visitor is unique per site per local day, matching the dashboard's days.
func LocalDate(t time.Time, loc *time.Location) string {
	return t.In(loc).Format(time.DateOnly)
}
