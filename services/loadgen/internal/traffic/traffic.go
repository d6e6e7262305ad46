// Package traffic generates realistic beacons for load tests: many sites of very different
// sizes, Zipf-distributed pages, visits that arrive from search, social, other sites or
// nowhere, UTM campaigns, real browser User-Agents and screens, visitors from many
// countries, SPA navigations, custom events with properties and engagement time. The
// same seed gives the same beacons.
package traffic

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"

	"github.com/haru-analytics/haru/pkg/event"
)

// Site is one target site: its collect token and the domain its pages live on.
type Site struct {
	Token  string
	Domain string
}

// Beacon is one request to send.
type Beacon struct {
	Token     string
	UserAgent string
	// IP is the visitor's address, sent in X-Forwarded-For.
	IP string
	// Country is the country IP belongs to.
	Country string
	// Name is the event name: pageview, engagement or a custom event.
	Name string
	// Body is the JSON payload.
	Body []byte
}

// Payload is the collect JSON the generator sends.
type Payload struct {
	Path     string            `json:"p"`
	Referrer string            `json:"r,omitempty"`
	ScreenW  int               `json:"sw,omitempty"`
	ScreenH  int               `json:"sh,omitempty"`
	Name     string            `json:"n,omitempty"`
	Duration int64             `json:"d,omitempty"`
	URL      string            `json:"u,omitempty"`
	Props    map[string]string `json:"props,omitempty"`
}

// Options shape the traffic; zero values take the defaults.
type Options struct {
	// SiteSkew is the Zipf exponent over sites (> 1): a few sites get most traffic.
	SiteSkew float64
	// PathSkew is the Zipf exponent over each site's pages (> 1).
	PathSkew float64
	// PathsPerSite is how many distinct pages a site has at most.
	PathsPerSite int
	// Visitors is how many visits are in progress at once.
	Visitors int
}

func (o Options) withDefaults() Options {
	if o.SiteSkew <= 1 {
		o.SiteSkew = 1.2
	}
	if o.PathSkew <= 1 {
		o.PathSkew = 1.3
	}
	if o.PathsPerSite <= 0 {
		o.PathsPerSite = 500
	}
	if o.Visitors <= 0 {
		o.Visitors = 2048
	}
	return o
}

// Generator produces beacons. It is not safe for concurrent use: give each sender its
// own, seeded differently.
type Generator struct {
	rng      *rand.Rand
	sites    []siteModel
	siteZipf *rand.Zipf
	visits   []visit
}

type siteModel struct {
	Site
	paths []string
	zipf  *rand.Zipf
}

// visit is one visitor's session in progress.
type visit struct {
	site    int
	ua      agent
	ip      string
	country string
	sw, sh  int
	page    string // current page URL
	path    string
	left    int // actions before the visit ends
	spa     bool
}

// New returns a generator over sites (at least one) from seed.
func New(seed uint64, sites []Site, o Options) (*Generator, error) {
	if len(sites) == 0 {
		return nil, fmt.Errorf("traffic: no sites")
	}
	o = o.withDefaults()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	g := &Generator{rng: rng, visits: make([]visit, o.Visitors)}
	for i, s := range sites {
		if s.Token == "" {
			return nil, fmt.Errorf("traffic: site %d has no token", i)
		}
		if s.Domain == "" {
			s.Domain = fmt.Sprintf("site%d.example", i+1)
		}
		n := pathsFor(i, o.PathsPerSite)
		g.sites = append(g.sites, siteModel{
			Site:  s,
			paths: makePaths(rng, n),
			zipf:  rand.NewZipf(rng, o.PathSkew, 1, uint64(n-1)),
		})
	}
	g.siteZipf = rand.NewZipf(rng, o.SiteSkew, 1, uint64(len(sites)-1))
	return g, nil
}

// pathsFor gives big sites (the Zipf head) many pages and small ones a few.
func pathsFor(rank, max int) int {
	n := max / (rank + 1)
	if n < 5 {
		n = 5
	}
	return n
}

var sections = []string{"blog", "docs", "products", "pricing", "about", "news", "guides", "shop", "help", "careers", "p", "category", "tag"}
var words = []string{"getting-started", "install", "release-notes", "privacy", "analytics", "dashboard", "how-to-scale",
	"summer-sale", "red-shoes", "api", "faq", "contact", "team", "cookie-free", "self-hosted", "benchmarks",
	"migration", "v2", "roadmap", "case-study", "tutorial", "changelog", "status", "login", "signup"}

func makePaths(rng *rand.Rand, n int) []string {
	paths := make([]string, n)
	seen := map[string]bool{"/": true}
	paths[0] = "/"
	for i := 1; i < n; i++ {
		for {
			var p string
			switch rng.IntN(3) {
			case 0:
				p = "/" + pick(rng, sections)
			case 1:
				p = "/" + pick(rng, sections) + "/" + pick(rng, words)
			default:
				p = "/" + pick(rng, sections) + "/" + pick(rng, words) + "-" + strconv.Itoa(rng.IntN(5000))
			}
			if !seen[p] {
				seen[p] = true
				paths[i] = p
				break
			}
		}
	}
	return paths
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// weighted picks an index by weight.
func weighted(rng *rand.Rand, weights []int) int {
	total := 0
	for _, w := range weights {
		total += w
	}
	r := rng.IntN(total)
	for i, w := range weights {
		if r < w {
			return i
		}
		r -= w
	}
	return len(weights) - 1
}

// Next returns the next beacon.
func (g *Generator) Next() Beacon {
	v := &g.visits[g.rng.IntN(len(g.visits))]
	if v.left <= 0 {
		return g.startVisit(v)
	}
	v.left--
	s := &g.sites[v.site]
	var p Payload
	switch r := g.rng.IntN(100); {
	case r < 55: // another page: a full load or an SPA navigation, referred by the last page
		prev := v.page
		g.moveTo(v, s)
		p = Payload{Path: v.path, URL: v.page, Referrer: prev, ScreenW: v.sw, ScreenH: v.sh}
	case r < 80: // engagement: time visible on the current page
		p = Payload{Path: v.path, URL: v.page, Name: event.EngagementName, Duration: g.engagement(), ScreenW: v.sw, ScreenH: v.sh}
	default:
		name, props := g.customEvent(v)
		p = Payload{Path: v.path, URL: v.page, Name: name, Props: props, ScreenW: v.sw, ScreenH: v.sh}
	}
	return g.beacon(v, p)
}

func (g *Generator) startVisit(v *visit) Beacon {
	site := int(g.siteZipf.Uint64())
	s := &g.sites[site]
	ua := pick(g.rng, agents)
	if g.rng.IntN(100) < 55 {
		ua = pick(g.rng, mobileAgents)
	}
	c := countries[weighted(g.rng, countryWeights)]
	*v = visit{site: site, ua: ua, ip: c.addr(g.rng), country: c.code, left: 1 + g.rng.IntN(12), spa: g.rng.IntN(3) == 0}
	v.sw, v.sh = ua.screen(g.rng)
	g.moveTo(v, s)
	ref, query := g.arrival(s)
	page := v.page
	if query != "" {
		page += "?" + query
	}
	return g.beacon(v, Payload{Path: v.path, URL: page, Referrer: ref, ScreenW: v.sw, ScreenH: v.sh})
}

// moveTo sends v to a page of s chosen by popularity.
func (g *Generator) moveTo(v *visit, s *siteModel) {
	v.path = s.paths[s.zipf.Uint64()]
	host := s.Domain
	if g.rng.IntN(10) == 0 {
		host = "www." + host
	}
	if v.spa && v.page != "" {
		// An SPA stays on the host it loaded from; only the path changes.
		host = hostOf(v.page)
	}
	v.page = "https://" + host + v.path
}

func hostOf(u string) string {
	u = strings.TrimPrefix(u, "https://")
	h, _, _ := strings.Cut(u, "/")
	return h
}

var searchRefs = []string{"https://www.google.com/", "https://www.google.de/", "https://www.bing.com/",
	"https://duckduckgo.com/", "https://search.yahoo.com/", "https://yandex.ru/", "https://www.ecosia.org/", "https://www.baidu.com/"}
var socialRefs = []string{"https://t.co/x1y2z3", "https://www.facebook.com/", "https://l.facebook.com/",
	"https://www.reddit.com/r/selfhosted/comments/abc123/", "https://news.ycombinator.com/item?id=4012345",
	"https://www.linkedin.com/feed/", "https://mastodon.social/@haru", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}
var otherRefs = []string{"https://github.com/haru-analytics/haru", "https://dev.to/someone/self-hosted-analytics",
	"https://medium.com/@writer/why-cookieless", "https://stackoverflow.com/questions/123456", "https://en.wikipedia.org/wiki/Web_analytics",
	"https://alternativeto.net/software/google-analytics/", "https://lobste.rs/s/abcd12"}

type campaign struct{ source, medium, name string }

var campaigns = []campaign{{"newsletter", "email", "spring_launch"}, {"google", "cpc", "brand"}, {"twitter", "social", "launch_week"},
	{"facebook", "paid_social", "retargeting"}, {"partner", "referral", "bundle"}, {"producthunt", "referral", "ph_launch"}}

// arrival picks how a visit arrives: its referrer and an optional UTM query.
func (g *Generator) arrival(s *siteModel) (ref, query string) {
	switch weighted(g.rng, []int{40, 30, 15, 15}) {
	case 0: // direct
	case 1:
		ref = pick(g.rng, searchRefs)
	case 2:
		ref = pick(g.rng, socialRefs)
	default:
		ref = pick(g.rng, otherRefs)
	}
	if g.rng.IntN(100) < 12 {
		c := pick(g.rng, campaigns)
		query = "utm_source=" + c.source + "&utm_medium=" + c.medium + "&utm_campaign=" + c.name
		if g.rng.IntN(3) == 0 {
			query += "&utm_content=variant_" + strconv.Itoa(1+g.rng.IntN(3))
		}
	}
	return ref, query
}

// engagement is time visible on a page, in ms: mostly seconds, sometimes minutes.
func (g *Generator) engagement() int64 {
	ms := int64(g.rng.ExpFloat64() * 25000)
	if ms > 30*60*1000 {
		ms = 30 * 60 * 1000
	}
	return ms + 200
}

var plans = []string{"free", "pro", "team", "enterprise"}
var buttons = []string{"hero_cta", "nav_signup", "footer_newsletter", "pricing_card"}

func (g *Generator) customEvent(v *visit) (string, map[string]string) {
	switch g.rng.IntN(6) {
	case 0:
		return "Signup", map[string]string{"plan": pick(g.rng, plans), "source": pick(g.rng, buttons)}
	case 1:
		return "Outbound Link: Click", map[string]string{"url": pick(g.rng, otherRefs)}
	case 2:
		return "File Download", map[string]string{"file": "haru-" + strconv.Itoa(1+g.rng.IntN(3)) + ".0.tar.gz"}
	case 3:
		return "Purchase", map[string]string{"plan": pick(g.rng, plans), "amount": strconv.Itoa(5 + g.rng.IntN(500)), "currency": "EUR"}
	case 4:
		return "404", map[string]string{"path": v.path + "-old"}
	default:
		return "Search", map[string]string{"query_len": strconv.Itoa(1 + g.rng.IntN(40)), "results": strconv.Itoa(g.rng.IntN(100))}
	}
}

func (g *Generator) beacon(v *visit, p Payload) Beacon {
	body, err := json.Marshal(p)
	if err != nil {
		panic(fmt.Sprintf("traffic: encode payload: %v", err)) // only strings and ints: cannot fail
	}
	name := p.Name
	if name == "" {
		name = event.PageviewName
	}
	return Beacon{Token: g.sites[v.site].Token, UserAgent: v.ua.ua, IP: v.ip, Country: v.country, Name: name, Body: body}
}

// agent is a real browser User-Agent and the screens it comes with.
type agent struct {
	ua      string
	screens [][2]int
}

func (a agent) screen(rng *rand.Rand) (int, int) {
	s := pick(rng, a.screens)
	return s[0], s[1]
}

var desktopScreens = [][2]int{{1920, 1080}, {1536, 864}, {1366, 768}, {2560, 1440}, {1440, 900}, {1280, 720}, {3840, 2160}, {1680, 1050}}
var phoneScreens = [][2]int{{390, 844}, {393, 873}, {412, 915}, {375, 667}, {360, 800}, {430, 932}, {414, 896}}
var tabletScreens = [][2]int{{810, 1080}, {820, 1180}, {768, 1024}, {1024, 1366}, {800, 1280}}

var agents = []agent{
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", desktopScreens},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0", desktopScreens},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0", desktopScreens},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", desktopScreens},
	{"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", desktopScreens},
	{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", desktopScreens},
	{"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", desktopScreens},
	{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 OPR/115.0.0.0", desktopScreens},
}

var mobileAgents = []agent{
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", phoneScreens},
	{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1", phoneScreens},
	{"Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", phoneScreens},
	{"Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", phoneScreens},
	{"Mozilla/5.0 (Android 14; Mobile; rv:133.0) Gecko/133.0 Firefox/133.0", phoneScreens},
	{"Mozilla/5.0 (iPad; CPU OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", tabletScreens},
	{"Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", tabletScreens},
}

// country is a country and address blocks its ISPs announce there.
type country struct {
	code     string
	prefixes []netip.Prefix
}

func (c country) addr(rng *rand.Rand) string {
	p := pick(rng, c.prefixes)
	b := p.Addr().As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= rng.Uint32() & (1<<(32-p.Bits()) - 1)
	if v&0xff == 0 || v&0xff == 0xff {
		v ^= 1 // no network or broadcast-looking addresses
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

func prefixes(ps ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ps))
	for i, p := range ps {
		out[i] = netip.MustParsePrefix(p)
	}
	return out
}

var countries = []country{
	{"US", prefixes("24.0.0.0/12", "73.0.0.0/8")},
	{"DE", prefixes("91.0.0.0/10", "79.192.0.0/10")},
	{"GB", prefixes("81.128.0.0/12", "86.128.0.0/10")},
	{"IN", prefixes("117.192.0.0/10")},
	{"FR", prefixes("86.192.0.0/11")},
	{"JP", prefixes("60.32.0.0/12")},
	{"CA", prefixes("70.24.0.0/13", "99.224.0.0/11")},
	{"CN", prefixes("114.224.0.0/12", "27.16.0.0/12")},
	{"ES", prefixes("79.144.0.0/12", "83.32.0.0/11")},
	{"IT", prefixes("93.32.0.0/11")},
	{"NL", prefixes("84.24.0.0/13", "77.160.0.0/12")},
	{"PL", prefixes("83.0.0.0/11", "79.184.0.0/13")},
	{"AU", prefixes("1.120.0.0/13")},
	{"KR", prefixes("121.128.0.0/10")},
	{"MX", prefixes("189.128.0.0/10")},
	{"SE", prefixes("78.64.0.0/12")},
	{"RU", prefixes("95.24.0.0/13")},
}

var countryWeights = []int{30, 10, 9, 8, 6, 5, 5, 4, 4, 4, 3, 3, 3, 2, 2, 1, 1}
