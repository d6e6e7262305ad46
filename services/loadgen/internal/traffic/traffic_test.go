package traffic

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/medama-io/go-useragent"
	"github.com/phuslu/iploc"
)

// Limits of the collect payload (services/ingest/internal/collect), restated: that
// package is ingest's own and cannot be imported here.
const (
	maxBodyBytes  = 16 << 10
	maxPathLen    = 2048
	maxURLLen     = 4096
	maxNameLen    = 120
	maxScreen     = 100000
	maxDurationMS = 24 * 60 * 60 * 1000
	maxProps      = 30
	maxPropKeyLen = 64
	maxPropValLen = 256
)

func testSites(n int) []Site {
	sites := make([]Site, n)
	for i := range sites {
		sites[i] = Site{Token: fmt.Sprintf("tok%d", i), Domain: fmt.Sprintf("s%d.example.com", i)}
	}
	return sites
}

func generate(t testing.TB, seed uint64, sites []Site, n int) []Beacon {
	t.Helper()
	g, err := New(seed, sites, Options{})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	out := make([]Beacon, n)
	for i := range out {
		out[i] = g.Next()
	}
	return out
}

func TestDeterministic(t *testing.T) {
	sites := testSites(20)
	a := generate(t, 7, sites, 2000)
	b := generate(t, 7, sites, 2000)
	c := generate(t, 8, sites, 2000)
	same := 0
	for i := range a {
		if diff := cmp.Diff(a[i], b[i]); diff != "" {
			t.Fatalf("same seed, beacon %d differs (-a +b):\n%s", i, diff)
		}
		if string(a[i].Body) == string(c[i].Body) {
			same++
		}
	}
	if same > len(a)/10 {
		t.Fatalf("different seeds: %d of %d beacons equal", same, len(a))
	}
}

func TestZipfHeadHeavierThanTail(t *testing.T) {
	sites := testSites(100)
	beacons := generate(t, 1, sites, 50000)
	perSite := map[string]int{}
	perPath := map[string]int{}
	for _, b := range beacons {
		perSite[b.Token]++
		if b.Token == "tok0" {
			var p Payload
			if err := json.Unmarshal(b.Body, &p); err != nil {
				t.Fatal(err)
			}
			perPath[p.Path]++
		}
	}
	head := perSite["tok0"] + perSite["tok1"] + perSite["tok2"]
	tail := 0
	for i := 50; i < 100; i++ {
		tail += perSite[fmt.Sprintf("tok%d", i)]
	}
	if head <= 2*tail {
		t.Fatalf("sites: top 3 got %d beacons, bottom 50 got %d: want the head far heavier", head, tail)
	}
	if len(perSite) < 50 {
		t.Fatalf("only %d of 100 sites got traffic", len(perSite))
	}
	if perPath["/"] <= perSite["tok0"]/10 {
		t.Fatalf("home page of the biggest site got %d of %d beacons: want the most popular page", perPath["/"], perSite["tok0"])
	}
	if len(perPath) < 50 {
		t.Fatalf("biggest site: only %d distinct paths", len(perPath))
	}
}

func TestOneSite(t *testing.T) {
	for _, b := range generate(t, 3, testSites(1), 500) {
		if b.Token != "tok0" {
			t.Fatalf("token %q", b.Token)
		}
	}
	if _, err := New(1, nil, Options{}); err == nil {
		t.Fatal("New with no sites: want an error")
	}
}

// TestFieldsValid checks every beacon against the collect limits, and that the traffic
// is varied: all event kinds, referrer sources, campaigns, countries and device kinds.
func TestFieldsValid(t *testing.T) {
	sites := testSites(30)
	parser := useragent.NewParser()
	kinds := map[string]int{}
	countries := map[string]int{}
	refHosts := map[string]bool{}
	mobile, desktop, campaigns, withProps, spa := 0, 0, 0, 0, 0
	for i, b := range generate(t, 42, sites, 20000) {
		if len(b.Body) > maxBodyBytes || !json.Valid(b.Body) || !utf8.Valid(b.Body) {
			t.Fatalf("beacon %d: invalid body %s", i, b.Body)
		}
		var p Payload
		if err := json.Unmarshal(b.Body, &p); err != nil {
			t.Fatalf("beacon %d: %v", i, err)
		}
		switch {
		case p.Path == "" || p.Path[0] != '/' || len(p.Path) > maxPathLen:
			t.Fatalf("beacon %d: path %q", i, p.Path)
		case len(p.URL) > maxURLLen || len(p.Referrer) > maxURLLen:
			t.Fatalf("beacon %d: url or referrer too long", i)
		case len(p.Name) > maxNameLen:
			t.Fatalf("beacon %d: name too long", i)
		case p.ScreenW <= 0 || p.ScreenW > maxScreen || p.ScreenH <= 0 || p.ScreenH > maxScreen:
			t.Fatalf("beacon %d: screen %dx%d", i, p.ScreenW, p.ScreenH)
		case p.Duration < 0 || p.Duration > maxDurationMS:
			t.Fatalf("beacon %d: duration %d", i, p.Duration)
		case len(p.Props) > maxProps:
			t.Fatalf("beacon %d: %d props", i, len(p.Props))
		}
		for k, v := range p.Props {
			if k == "" || len(k) > maxPropKeyLen || len(v) > maxPropValLen {
				t.Fatalf("beacon %d: prop %q=%q", i, k, v)
			}
		}
		u, err := url.Parse(p.URL)
		if err != nil || u.Scheme != "https" || u.Path != p.Path {
			t.Fatalf("beacon %d: url %q for path %q", i, p.URL, p.Path)
		}
		site := sites[indexOf(sites, b.Token)]
		if u.Host != site.Domain && u.Host != "www."+site.Domain {
			t.Fatalf("beacon %d: host %q not on site %q", i, u.Host, site.Domain)
		}
		if u.Query().Get("utm_source") != "" {
			campaigns++
		}
		if p.Referrer != "" {
			r, err := url.Parse(p.Referrer)
			if err != nil || r.Host == "" {
				t.Fatalf("beacon %d: referrer %q", i, p.Referrer)
			}
			if strings.HasSuffix(r.Host, site.Domain) {
				spa++
			} else {
				refHosts[r.Host] = true
			}
		}
		if len(p.Props) > 0 {
			withProps++
		}
		kinds[kind(b.Name)]++

		ua := parser.Parse(b.UserAgent)
		if ua.IsBot() || ua.Browser() == "" || ua.OS() == "" {
			t.Fatalf("beacon %d: user agent %q parses as bot=%v browser=%q os=%q", i, b.UserAgent, ua.IsBot(), ua.Browser(), ua.OS())
		}
		if ua.IsMobile() || ua.IsTablet() {
			mobile++
		} else {
			desktop++
		}
		ip, err := netip.ParseAddr(b.IP)
		if err != nil || !ip.IsGlobalUnicast() || ip.IsPrivate() {
			t.Fatalf("beacon %d: address %q", i, b.IP)
		}
		if got := iploc.IPCountry(ip); got != b.Country {
			t.Fatalf("beacon %d: %s is in %q by the country database, generated as %q", i, b.IP, got, b.Country)
		}
		countries[b.Country]++
	}
	for _, k := range []string{"pageview", "engagement", "custom"} {
		if kinds[k] < 1000 {
			t.Errorf("only %d %s beacons in 20000", kinds[k], k)
		}
	}
	if len(countries) < 15 {
		t.Errorf("only %d countries", len(countries))
	}
	if len(refHosts) < 15 {
		t.Errorf("only %d referrer hosts", len(refHosts))
	}
	if mobile < 3000 || desktop < 3000 {
		t.Errorf("mobile %d, desktop %d: want both common", mobile, desktop)
	}
	if campaigns < 100 || withProps < 500 || spa < 1000 {
		t.Errorf("campaigns %d, beacons with props %d, internal navigations %d: want each common", campaigns, withProps, spa)
	}
}

func kind(name string) string {
	if name == "pageview" || name == "engagement" {
		return name
	}
	return "custom"
}

func indexOf(sites []Site, token string) int {
	for i, s := range sites {
		if s.Token == token {
			return i
		}
	}
	return -1
}

func BenchmarkNext(b *testing.B) {
	g, err := New(1, testSites(1000), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		g.Next()
	}
}
