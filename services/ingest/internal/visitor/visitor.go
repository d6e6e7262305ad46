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

	"github.com/haru-analytics/haru/services/ingest/internal/salt"
)

// ID returns the visitor id. SipHash-2-4 is a keyed PRF built for short inputs: fast on
// the hot path and, without the key, not invertible or linkable across days. The input
// is the site id, the address as text and the User-Agent, NUL-separated.
func ID(s salt.Salt, site int64, ip netip.Addr, userAgent string) int64 {
	// Fold the 32-byte salt into SipHash's 128-bit key so every salt byte matters.
	k0 := binary.LittleEndian.Uint64(s[0:8]) ^ binary.LittleEndian.Uint64(s[16:24])
	k1 := binary.LittleEndian.Uint64(s[8:16]) ^ binary.LittleEndian.Uint64(s[24:32])
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

// LocalDate is the calendar date at t in the site's timezone, the key of the salt that
// applies: a visitor is unique per site per local day, matching the dashboard's days.
func LocalDate(t time.Time, loc *time.Location) string {
	return t.In(loc).Format(time.DateOnly)
}
