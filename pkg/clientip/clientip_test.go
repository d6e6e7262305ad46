package clientip

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestClientIP(t *testing.T) {
	tests := []struct {
		name    string
		trusted []string
		peer    string
		header  string
		want    string
	}{
		{"no proxies: peer", nil, "1.2.3.4", "9.9.9.9", "1.2.3.4"},
		{"untrusted peer ignores header", []string{"10.0.0.0/8"}, "1.2.3.4", "9.9.9.9", "1.2.3.4"},
		{"trusted peer: header", []string{"10.0.0.0/8"}, "10.0.0.1", "9.9.9.9", "9.9.9.9"},
		{"rightmost untrusted hop", []string{"10.0.0.0/8"}, "10.0.0.1", "6.6.6.6, 9.9.9.9, 10.0.0.2", "9.9.9.9"},
		{"spoofed left hop ignored", []string{"10.0.0.0/8"}, "10.0.0.1", "1.1.1.1,9.9.9.9", "9.9.9.9"},
		{"garbled hop stops", []string{"10.0.0.0/8"}, "10.0.0.1", "9.9.9.9, junk, 10.0.0.3", "10.0.0.3"},
		{"empty header: peer", []string{"10.0.0.1"}, "10.0.0.1", "", "10.0.0.1"},
		{"mapped peer", []string{"10.0.0.0/8"}, "::ffff:10.0.0.1", "9.9.9.9", "9.9.9.9"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.trusted, "X-Forwarded-For")
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			got := r.ClientIP(netip.MustParseAddr(tt.peer), func() string { return tt.header })
			if diff := cmp.Diff(tt.want, got.String()); diff != "" {
				t.Fatalf("ClientIP (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTrusted(t *testing.T) {
	r, err := New([]string{"10.0.0.0/8", "192.168.1.1"}, "X-Forwarded-For")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		peer string
		want bool
	}{{"10.1.2.3", true}, {"192.168.1.1", true}, {"192.168.1.2", false}, {"::ffff:10.0.0.1", true}, {"8.8.8.8", false}}
	for _, tt := range tests {
		if got := r.Trusted(netip.MustParseAddr(tt.peer)); got != tt.want {
			t.Fatalf("Trusted(%s) = %v, want %v", tt.peer, got, tt.want)
		}
	}
	if _, err := New([]string{"nonsense"}, "X"); err == nil {
		t.Fatal("New(nonsense) = nil error")
	}
}

func FuzzClientIP(f *testing.F) {
	f.Add("1.1.1.1, 10.0.0.2", "10.0.0.1")
	f.Add("junk,,", "10.0.0.1")
	r, err := New([]string{"10.0.0.0/8"}, "X-Forwarded-For")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, header, peer string) {
		p, err := netip.ParseAddr(peer)
		if err != nil {
			return
		}
		got := r.ClientIP(p, func() string { return header })
		if !r.Trusted(p) && got != p.Unmap() {
			t.Fatalf("untrusted peer %s gave %s", p, got)
		}
		if want := splitClientIP(r, p, header); got != want {
			t.Fatalf("ClientIP(%s, %q) = %s, want %s as by splitting the header", p, header, got, want)
		}
	})
}

// splitClientIP is ClientIP written plainly, splitting the header: the reference the
// in-place walk must agree with.
func splitClientIP(r *Resolver, peer netip.Addr, header string) netip.Addr {
	peer = peer.Unmap()
	if !r.isTrusted(peer) {
		return peer
	}
	hops := strings.Split(header, ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			break
		}
		a = a.Unmap()
		if !r.isTrusted(a) {
			return a
		}
		peer = a
	}
	return peer
}
