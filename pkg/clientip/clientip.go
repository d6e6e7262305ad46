// Package clientip finds a request's client address: the peer, unless the peer is a
// trusted proxy, in which case the forwarding header is believed, right to left, up to
// the first address that is not itself a trusted proxy.
package clientip

import (
	"fmt"
	"net/netip"
	"strings"
)

// Resolver knows which peers are trusted proxies and which header they set.
type Resolver struct {
	trusted []netip.Prefix
	header  string
}

// New parses trusted (CIDRs or single addresses) and returns a Resolver that believes
// header only from them.
func New(trusted []string, header string) (*Resolver, error) {
	r := &Resolver{header: header}
	for _, s := range trusted {
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", s, err)
			}
			r.trusted = append(r.trusted, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("trusted proxy %q: %w", s, err)
		}
		r.trusted = append(r.trusted, p.Masked())
	}
	return r, nil
}

// Header is the forwarding header consulted for trusted peers.
func (r *Resolver) Header() string { return r.header }

// Trusted reports whether peer is a trusted proxy, whose other headers (a CDN's country,
// say) may be believed too.
func (r *Resolver) Trusted(peer netip.Addr) bool { return r.isTrusted(peer) }

func (r *Resolver) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client address given the peer's and the forwarding header's value
// (read only when the peer is trusted; pass a func so untrusted requests never parse it).
func (r *Resolver) ClientIP(peer netip.Addr, header func() string) netip.Addr {
	peer = peer.Unmap()
	if len(r.trusted) == 0 || !r.isTrusted(peer) {
		return peer
	}
	// Walk the hops right to left in place: splitting the header would allocate.
	hops := header()
	for {
		i := strings.LastIndexByte(hops, ',')
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i+1:]))
		if err != nil {
			// A garbled hop: what lies left of it cannot be trusted either.
			break
		}
		a = a.Unmap()
		if !r.isTrusted(a) {
			return a
		}
		peer = a
		if i < 0 {
			break
		}
		hops = hops[:i]
	}
	return peer
}
