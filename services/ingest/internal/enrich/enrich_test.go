package enrich

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/haru-analytics/haru/pkg/event"
)

func TestParsePage(t *testing.T) {
	tests := []struct {
		name     string
		raw      string
		path     string
		hashMode bool
		want     Page
	}{
		{"empty", "", "", false, Page{}},
		{"host and path", "https://WWW.Example.com:8443/blog/a?x=1#top", "", false,
			Page{Host: "www.example.com", Path: "/blog/a"}},
		{"tracker path wins", "https://example.com/a", "/b", false, Page{Host: "example.com", Path: "/b"}},
		{"root", "https://example.com", "", false, Page{Host: "example.com", Path: "/"}},
		{"hash mode", "https://example.com/app#/settings?tab=1", "", true, Page{Host: "example.com", Path: "/app#/settings?tab=1"}},
		{"hash mode with tracker path", "https://example.com/app#/x", "/app", true, Page{Host: "example.com", Path: "/app#/x"}},
		{"fragment ignored without hash mode", "https://example.com/app#/x", "", false, Page{Host: "example.com", Path: "/app"}},
		{"utm", "https://example.com/?utm_source=news%20letter&utm_medium=email&utm_campaign=spring+sale&utm_term=a&utm_content=b&utm_id=9",
			"", false, Page{Host: "example.com", Path: "/", UTM: UTM{"news letter", "email", "spring sale", "a", "b"}}},
		{"utm first wins", "https://example.com/?utm_source=a&utm_source=b", "", false, Page{Host: "example.com", Path: "/", UTM: UTM{Source: "a"}}},
		{"utm NUL dropped", "https://example.com/?utm_source=a%00b&utm_medium=%ff", "", false, Page{Host: "example.com", Path: "/"}},
		{"utm bad escape dropped", "https://example.com/?utm_source=%zz", "", false, Page{Host: "example.com", Path: "/"}},
		{"bad host", "https://exa mple.com/", "", false, Page{Path: "/"}},
		{"userinfo", "https://user:pw@example.com/", "", false, Page{Host: "example.com", Path: "/"}},
		{"ipv6", "http://[::1]:8080/x", "", false, Page{Host: "::1", Path: "/x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParsePage(tt.raw, tt.path, tt.hashMode)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("ParsePage(%q, %q, %v) (-want +got):\n%s", tt.raw, tt.path, tt.hashMode, diff)
			}
		})
	}
}

func TestRefSource(t *testing.T) {
	tests := []struct {
		ref, pageHost, domain, want string
	}{
		{"", "example.com", "example.com", ""},
		{"https://google.com", "", "example.com", "Google"},
		{"https://www.google.co.uk/search?q=x", "", "example.com", "Google"},
		{"https://google.de/", "", "example.com", "Google"},
		{"https://www.bing.com/", "", "example.com", "Bing"},
		{"https://duckduckgo.com/", "", "example.com", "DuckDuckGo"},
		{"https://search.yahoo.co.jp/", "", "example.com", "Yahoo"},
		{"https://www.baidu.com/link?url=x", "", "example.com", "Baidu"},
		{"https://yandex.ru/", "", "example.com", "Yandex"},
		{"https://l.facebook.com/l.php?u=x", "", "example.com", "Facebook"},
		{"https://t.co/abc", "", "example.com", "Twitter"},
		{"https://x.com/someone", "", "example.com", "Twitter"},
		{"https://twitter.com/", "", "example.com", "Twitter"},
		{"https://www.linkedin.com/feed", "", "example.com", "LinkedIn"},
		{"https://old.reddit.com/r/golang", "", "example.com", "Reddit"},
		{"https://m.youtube.com/", "", "example.com", "YouTube"},
		{"https://l.instagram.com/", "", "example.com", "Instagram"},
		{"https://github.com/haru", "", "example.com", "GitHub"},
		{"https://news.ycombinator.com/item?id=1", "", "example.com", "Hacker News"},
		{"https://www.Blog.Other.org:443/post", "", "example.com", "blog.other.org"},
		{"google.com", "", "example.com", "Google"},
		{"https://google.example.org/", "", "example.com", "google.example.org"},
		{"https://example.com/other", "example.com", "example.com", ""},
		{"https://www.example.com/other", "example.com", "example.com", ""},
		{"https://docs.example.com/", "docs.example.com", "example.com", ""},
		{"https://shop.example.com/", "example.com", "example.com", ""},
		{"https://mirror.net/", "mirror.net", "example.com", ""},
		{"https://notexample.com/", "example.com", "example.com", "notexample.com"},
		{"android-app://com.google.android.gm/", "", "example.com", ""},
		{"https://bad host/", "", "example.com", ""},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			got := RefSource(tt.ref, tt.pageHost, tt.domain)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Fatalf("RefSource(%q, %q, %q) (-want +got):\n%s", tt.ref, tt.pageHost, tt.domain, diff)
			}
		})
	}
}

func TestSameSite(t *testing.T) {
	tests := []struct {
		host, domain string
		want         bool
	}{
		{"example.com", "example.com", true},
		{"www.example.com", "example.com", true},
		{"a.b.example.com", "example.com", true},
		{"example.com", "www.example.com", true},
		{"notexample.com", "example.com", false},
		{"example.com.evil.net", "example.com", false},
		{"", "example.com", false},
		{"example.com", "", false},
		{"example.com", "Example.COM.", true},
	}
	for _, tt := range tests {
		t.Run(tt.host+"/"+tt.domain, func(t *testing.T) {
			if got := SameSite(tt.host, tt.domain); got != tt.want {
				t.Fatalf("SameSite(%q, %q) = %v, want %v", tt.host, tt.domain, got, tt.want)
			}
		})
	}
}

func TestDevice(t *testing.T) {
	tests := []struct {
		ua   string
		sw   int
		want string
	}{
		{"Mobile", 844, DeviceMobile},
		{"Tablet", 1366, DeviceTablet},
		{"TV", 1920, DeviceTV},
		{"Desktop", 0, DeviceDesktop},
		{"Desktop", 1280, DeviceLaptop},
		{"Desktop", 1920, DeviceDesktop},
		{"Desktop", 800, DeviceTablet},
		{"", 375, DeviceMobile},
		{"", 575, DeviceMobile},
		{"", 576, DeviceTablet},
		{"", 991, DeviceTablet},
		{"", 992, DeviceLaptop},
		{"", 1439, DeviceLaptop},
		{"", 1440, DeviceDesktop},
		{"", 0, ""},
		{"Bot", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.ua, func(t *testing.T) {
			if got := Device(tt.ua, tt.sw); got != tt.want {
				t.Fatalf("Device(%q, %d) = %q, want %q", tt.ua, tt.sw, got, tt.want)
			}
		})
	}
}

func TestAgents(t *testing.T) {
	a := NewAgents()
	tests := []struct {
		ua   string
		want Agent
	}{
		{"Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0", Agent{Browser: "Firefox", OS: "Linux", Device: "Desktop"}},
		{"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
			Agent{Browser: "Safari", OS: "iOS", Device: "Mobile"}},
		{"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", Agent{Device: "Bot", Bot: true}},
		{"", Agent{}},
	}
	for _, tt := range tests {
		t.Run(tt.ua, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, a.Parse(tt.ua)); diff != "" {
				t.Fatalf("Parse(%q) (-want +got):\n%s", tt.ua, diff)
			}
		})
	}
}

func TestCountryRegion(t *testing.T) {
	tests := []struct {
		name               string
		ip                 string
		cdnCountry         string
		cdnRegion          string
		trusted            bool
		wantCC, wantRegion string
	}{
		{"database", "8.8.8.8", "", "", false, "US", ""},
		{"mapped v4", "::ffff:8.8.8.8", "", "", false, "US", ""},
		{"ipv6", "2001:4860:4860::8888", "", "", false, "US", ""},
		{"private", "10.0.0.1", "", "", false, "", ""},
		{"loopback", "127.0.0.1", "", "", false, "", ""},
		{"cdn ignored untrusted", "8.8.8.8", "DE", "BE", false, "US", ""},
		{"cdn trusted", "10.0.0.1", "DE", "BE", true, "DE", "DE-BE"},
		{"cdn region with prefix", "10.0.0.1", "US", "US-CA", true, "US", "US-CA"},
		{"cdn region other country", "10.0.0.1", "US", "DE-BE", true, "US", ""},
		{"cdn unknown falls back", "8.8.8.8", "XX", "", true, "US", ""},
		{"cdn tor falls back", "8.8.8.8", "T1", "", true, "US", ""},
		{"cdn region junk", "10.0.0.1", "DE", "B E;", true, "DE", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ip := netip.MustParseAddr(tt.ip)
			cc := Country(ip, tt.cdnCountry, tt.trusted)
			got := []string{cc, Region(cc, tt.cdnRegion, tt.trusted)}
			if diff := cmp.Diff([]string{tt.wantCC, tt.wantRegion}, got); diff != "" {
				t.Fatalf("country, region (-want +got):\n%s", diff)
			}
		})
	}
	if got := Country(netip.Addr{}, "", false); got != "" {
		t.Fatalf("Country(invalid) = %q, want empty", got)
	}
}

// FuzzRefSource checks referrer reduction never panics and yields storable text.
func FuzzRefSource(f *testing.F) {
	for _, s := range []string{"https://www.google.com/", "t.co", "https://[::1]:80/", "http://a@b@c:1/", "https://x.com.", "://", "https://ya.ru"} {
		f.Add(s, "example.com")
	}
	f.Fuzz(func(t *testing.T, ref, domain string) {
		if !event.Storable(ref) {
			return
		}
		if got := RefSource(ref, "", domain); !event.Storable(got) {
			t.Fatalf("RefSource(%q) = %q", ref, got)
		}
	})
}

// FuzzSearchBrand holds the in-place label walk to the plain version that splits the host.
func FuzzSearchBrand(f *testing.F) {
	for _, s := range []string{"www.google.com", "google.co.uk", "google.", "google..com", "google.a.b.c", "x.bing.comm", "yahoo", "duckduckgo.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		if got, want := searchBrand(host), splitSearchBrand(host); got != want {
			t.Fatalf("searchBrand(%q) = %q, want %q", host, got, want)
		}
	})
}

func splitSearchBrand(host string) string {
	labels := strings.Split(host, ".")
	for i, l := range labels {
		name, ok := searchBrands[l]
		if !ok {
			continue
		}
		suffix := labels[i+1:]
		if len(suffix) == 0 || len(suffix) > 2 {
			continue
		}
		short := true
		for _, s := range suffix {
			if len(s) > 3 {
				short = false
			}
		}
		if short {
			return name
		}
	}
	return ""
}

// FuzzParsePage checks page URL parsing never panics and yields storable fields.
func FuzzParsePage(f *testing.F) {
	for _, s := range []string{"https://example.com/a?utm_source=x%20y#f", "https://[::1]/", "//x", "?utm_medium=%C3", "https://a.b/#"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, raw string, hash bool) {
		if !event.Storable(raw) {
			return
		}
		p := ParsePage(raw, "", hash)
		for _, s := range []string{p.Host, p.Path, p.UTM.Source, p.UTM.Medium, p.UTM.Campaign, p.UTM.Term, p.UTM.Content} {
			if !event.Storable(s) {
				t.Fatalf("ParsePage(%q) gave unstorable %q", raw, s)
			}
		}
	})
}

func BenchmarkEnrich(b *testing.B) {
	a := NewAgents()
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
	ip := netip.MustParseAddr("81.2.69.160")
	b.ReportAllocs()
	for b.Loop() {
		pg := ParsePage("https://www.example.com/blog/post-1?utm_source=newsletter&utm_medium=email", "", false)
		_ = RefSource("https://www.google.com/", pg.Host, "example.com")
		_ = Country(ip, "", false)
		ag := a.Parse(ua)
		_ = Device(ag.Device, 1920)
	}
}
