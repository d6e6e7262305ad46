package visitor

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/dchest/siphash"
	"github.com/google/uuid"

	"github.com/haru-analytics/haru/services/ingest/internal/salt"
)

func TestID(t *testing.T) {
	var s1, s2 salt.Salt
	s1[0], s2[0] = 1, 2
	base := ID(s1, 7, netip.MustParseAddr("81.2.69.160"), "Firefox")
	tests := []struct {
		name string
		id   int64
		same bool
	}{
		{"same inputs", ID(s1, 7, netip.MustParseAddr("81.2.69.160"), "Firefox"), true},
		{"other salt (day)", ID(s2, 7, netip.MustParseAddr("81.2.69.160"), "Firefox"), false},
		{"other site", ID(s1, 8, netip.MustParseAddr("81.2.69.160"), "Firefox"), false},
		{"other ip", ID(s1, 7, netip.MustParseAddr("81.2.69.161"), "Firefox"), false},
		{"other agent", ID(s1, 7, netip.MustParseAddr("81.2.69.160"), "Chrome"), false},
		{"field boundary", ID(s1, 7, netip.MustParseAddr("81.2.69.16"), "0Firefox"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.id == base; got != tt.same {
				t.Fatalf("equal to base = %v, want %v", got, tt.same)
			}
		})
	}
}

// TestEventID: a retry (the same body from the same visitor) gets the same id; any
// other event another one.
func TestEventID(t *testing.T) {
	var s1, s2 salt.Salt
	s1[0], s2[0] = 1, 2
	body := []byte(`{"n":"pageview","p":"/a","i":1796515200123}`)
	base := EventID(s1, 7, 42, body)
	if v, variant := base.Version(), base.Variant(); v != 8 || variant != uuid.RFC4122 {
		t.Fatalf("version %d, variant %v; want 8, RFC 9562's", v, variant)
	}
	tests := []struct {
		name string
		id   uuid.UUID
		same bool
	}{
		{"a retry", EventID(s1, 7, 42, []byte(`{"n":"pageview","p":"/a","i":1796515200123}`)), true},
		{"other salt (day)", EventID(s2, 7, 42, body), false},
		{"other site", EventID(s1, 8, 42, body), false},
		{"other visitor", EventID(s1, 7, 43, body), false},
		{"sent a millisecond later", EventID(s1, 7, 42, []byte(`{"n":"pageview","p":"/a","i":1796515200124}`)), false},
		{"another event in the same millisecond", EventID(s1, 7, 42, []byte(`{"n":"engagement","p":"/a","i":1796515200123}`)), false},
		{"other props", EventID(s1, 7, 42, []byte(`{"n":"pageview","p":"/a","i":1796515200123,"props":{"k":"v"}}`)), false},
	}
	for _, tt := range tests {
		if got := tt.id == base; got != tt.same {
			t.Errorf("%s: equal to base = %v, want %v", tt.name, got, tt.same)
		}
	}
}

// TestIDStable pins ids to the values the first implementation gave: a change of the
// hash input would give every visitor a new id in the middle of a day.
func TestIDStable(t *testing.T) {
	var s salt.Salt
	for i := range s {
		s[i] = byte(i*7 + 1)
	}
	tests := []struct {
		site int64
		ip   netip.Addr
		ua   string
		want int64
	}{
		{7, netip.MustParseAddr("81.2.69.160"), "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0", 2083278998089185790},
		{123456789, netip.MustParseAddr("2001:db8::1"), "", 748519814820480007},
		{1, netip.Addr{}, "x", 4861393424965767550},
	}
	for _, tt := range tests {
		if got := ID(s, tt.site, tt.ip, tt.ua); got != tt.want {
			t.Fatalf("ID(%d, %s, %q) = %d, want %d", tt.site, tt.ip, tt.ua, got, tt.want)
		}
	}
	// Longer than the stack buffer, and a zoned address: still the first input.
	for _, ua := range []string{strings.Repeat("long agent ", 100), "Mozilla/5.0"} {
		for _, ip := range []string{"81.2.69.160", "fe80::1%eth0", "::ffff:1.2.3.4"} {
			a := netip.MustParseAddr(ip)
			want := int64(siphash.Hash(
				binary.LittleEndian.Uint64(s[0:8])^binary.LittleEndian.Uint64(s[16:24]),
				binary.LittleEndian.Uint64(s[8:16])^binary.LittleEndian.Uint64(s[24:32]),
				[]byte("42\x00"+a.String()+"\x00"+ua)))
			if got := ID(s, 42, a, ua); got != want {
				t.Fatalf("ID(42, %s, %d-byte agent) = %d, want %d", ip, len(ua), got, want)
			}
		}
	}
}

func TestLocalDate(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skipf("no tz database: %v", err)
	}
	tests := []struct {
		t    time.Time
		loc  *time.Location
		want string
	}{
		{time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC), time.UTC, "2026-03-01"},
		{time.Date(2026, 3, 1, 23, 30, 0, 0, time.UTC), tokyo, "2026-03-02"},
		{time.Date(2026, 3, 1, 14, 59, 0, 0, time.UTC), tokyo, "2026-03-01"},
	}
	for _, tt := range tests {
		if got := LocalDate(tt.t, tt.loc); got != tt.want {
			t.Fatalf("LocalDate(%s, %s) = %s, want %s", tt.t, tt.loc, got, tt.want)
		}
	}
}

// BenchmarkIDs: the event id of a beacon carrying i beside the visitor id every beacon
// costs.
//
//	go test -run '^$' -bench BenchmarkIDs ./services/ingest/internal/visitor/
func BenchmarkIDs(b *testing.B) {
	var s salt.Salt
	ip := netip.MustParseAddr("81.2.69.160")
	ua := "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	b.ReportAllocs()
	b.Run("visitor", func(b *testing.B) {
		for b.Loop() {
			ID(s, 7, ip, ua)
		}
	})
	body := []byte(`{"n":"pageview","p":"/blog/2026/12/a-post-about-analytics","u":"https://example.com/blog/2026/12/a-post-about-analytics",` +
		`"r":"https://www.google.com/","sw":1920,"sh":1080,"i":1796515200123}`)
	b.Run("event", func(b *testing.B) {
		for b.Loop() {
			EventID(s, 7, 42, body)
		}
	})
}
