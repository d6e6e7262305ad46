// Package enrich derives an event's descriptive fields from what the beacon and its
// request carry: hostname and UTM tags from the page URL, a referrer source, country and
// region, browser, OS and device class. Nothing here keeps the IP or the User-Agent: they
// are read and forgotten.
package enrich

import (
	"net/netip"
	"net/url"
	"strings"
	"unicode/utf8"

	useragent "github.com/medama-io/go-useragent"
	"github.com/phuslu/iploc"

	"github.com/haru-analytics/haru/pkg/event"
)

// MaxUTMLen bounds one utm_* value after unescaping; longer values are cut at a rune
// boundary rather than refused, since the page URL was already accepted.
const MaxUTMLen = 256

// Device classes. Width classes follow DESIGN.md's screen classes; TV comes from the UA.
const (
	DeviceMobile  = "Mobile"
	DeviceTablet  = "Tablet"
	DeviceLaptop  = "Laptop"
	DeviceDesktop = "Desktop"
	DeviceTV      = "TV"
)

// Agent is what the User-Agent tells about the browser.
type Agent struct {
	Browser string
	OS      string
	// Device is the parser's own class: "Mobile", "Tablet", "Desktop", "TV", "Bot" or "".
	Device string
	// Bot is the parser's bot flag.
	Bot bool
}

// Agents parses User-Agent strings with a trie built once at start.
type Agents struct {
	p *useragent.Parser
}

// NewAgents builds the parser from the definitions shipped inside the module.
func NewAgents() *Agents { return &Agents{p: useragent.NewParser()} }

// Parse reads ua.
func (a *Agents) Parse(ua string) Agent {
	r := a.p.Parse(ua)
	return Agent{
		Browser: string(r.Browser()),
		OS:      string(r.OS()),
		Device:  string(r.Device()),
		Bot:     r.IsBot(),
	}
}

// Device is the device class of a UA class and a screen width (0 when unknown). The UA
// decides for phones, tablets and TVs, since a phone turned sideways is still a phone;
// otherwise the width splits laptops from desktops (and names small desktop windows by
// their width), and without a width the UA's own class stands.
func Device(uaDevice string, screenW int) string {
	switch uaDevice {
	case DeviceMobile, DeviceTablet, DeviceTV:
		return uaDevice
	}
	switch {
	case screenW <= 0:
		if uaDevice == DeviceDesktop {
			return DeviceDesktop
		}
		return ""
	case screenW < 576:
		return DeviceMobile
	case screenW < 992:
		return DeviceTablet
	case screenW < 1440:
		return DeviceLaptop
	}
	return DeviceDesktop
}

// Page is what the page URL tells.
type Page struct {
	Host string
	Path string
	UTM  UTM
}

// UTM are the campaign tags of the page URL.
type UTM struct {
	Source, Medium, Campaign, Term, Content string
}

// ParsePage reads the page URL raw (already valid UTF-8 without NUL). path is the path
// the tracker sent; when empty the URL's path is used. In hash mode the site routes by
// fragment, so the fragment belongs to the path.
func ParsePage(raw, path string, hashMode bool) Page {
	var pg Page
	rest := raw
	if i := strings.Index(rest, "://"); i >= 0 {
		rest = rest[i+3:]
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		pg.Host = Host(rest[:end])
		rest = rest[end:]
	}
	frag := ""
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		rest, frag = rest[:i], rest[i+1:]
	}
	query := ""
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest, query = rest[:i], rest[i+1:]
	}
	if path == "" {
		path = rest
	}
	if hashMode && frag != "" && !strings.Contains(path, "#") {
		path += "#" + frag
	}
	if path == "" && raw != "" {
		path = "/"
	}
	pg.Path = path
	pg.UTM = parseUTM(query)
	return pg
}

func parseUTM(query string) UTM {
	var u UTM
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, "utm_") {
			continue
		}
		var dst *string
		switch k {
		case "utm_source":
			dst = &u.Source
		case "utm_medium":
			dst = &u.Medium
		case "utm_campaign":
			dst = &u.Campaign
		case "utm_term":
			dst = &u.Term
		case "utm_content":
			dst = &u.Content
		default:
			continue
		}
		if *dst != "" {
			continue // the first occurrence wins
		}
		val, err := url.QueryUnescape(v)
		// Unescaping can produce what the raw URL did not contain: %00 or broken UTF-8.
		if err != nil || !event.Storable(val) {
			continue
		}
		*dst = truncate(strings.TrimSpace(val), MaxUTMLen)
	}
	return u
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Host normalises an authority (host[:port], maybe with userinfo) to a lower-case host
// name without port or trailing dot, or "" when it is not a plausible host.
func Host(authority string) string {
	if i := strings.LastIndexByte(authority, '@'); i >= 0 {
		authority = authority[i+1:]
	}
	if strings.HasPrefix(authority, "[") { // IPv6 literal
		if i := strings.IndexByte(authority, ']'); i > 0 {
			if a, err := netip.ParseAddr(authority[1:i]); err == nil {
				return a.String()
			}
		}
		return ""
	}
	if i := strings.IndexByte(authority, ':'); i >= 0 {
		authority = authority[:i]
	}
	authority = strings.TrimSuffix(authority, ".")
	if authority == "" || len(authority) > 253 {
		return ""
	}
	lower := true
	for i := 0; i < len(authority); i++ {
		c := authority[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		case c >= 'A' && c <= 'Z':
			lower = false
		default:
			return ""
		}
	}
	if !lower {
		authority = strings.ToLower(authority)
	}
	return authority
}

// SameSite reports whether host is domain or one of its subdomains (both normalised; a
// leading "www." on domain is ignored so "www.example.com" also covers "example.com").
func SameSite(host, domain string) bool {
	domain = strings.TrimPrefix(strings.ToLower(strings.TrimSuffix(domain, ".")), "www.")
	if host == "" || domain == "" {
		return false
	}
	return host == domain || strings.HasSuffix(host, domain) && host[len(host)-len(domain)-1] == '.'
}

// Country returns the visitor's ISO 3166-1 alpha-2 country. cdn is the CDN's country
// header, believed only when trusted (the peer is a trusted proxy); otherwise the
// database shipped in the binary answers for public addresses.
func Country(ip netip.Addr, cdn string, trusted bool) string {
	if trusted && isCountry(cdn) {
		return cdn
	}
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return ""
	}
	c := iploc.IPCountry(ip)
	if !isCountry(c) {
		return ""
	}
	return c
}

// WarmUp loads the IPv6 country table, which the database decompresses on its first IPv6
// lookup: done at start, that pause does not land on a visitor's beacon.
func WarmUp() {
	iploc.IPCountry(netip.MustParseAddr("2001:4860:4860::8888"))
}

// isCountry accepts two upper-case letters, except the codes CDNs use for "unknown"
// (XX) and Tor (T1 fails the letter test).
func isCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' && c != "XX" && c != "ZZ"
}

// Region returns an ISO 3166-2 subdivision ("US-CA") from a trusted CDN's region header,
// which may carry the code with or without its country prefix; "" when untrusted or odd.
func Region(country, cdn string, trusted bool) string {
	if !trusted || cdn == "" || len(cdn) > 6 || country == "" {
		return ""
	}
	for i := 0; i < len(cdn); i++ {
		c := cdn[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return ""
		}
	}
	cdn = strings.ToUpper(cdn)
	if strings.Contains(cdn, "-") {
		if !strings.HasPrefix(cdn, country+"-") {
			return ""
		}
		return cdn
	}
	return country + "-" + cdn
}
