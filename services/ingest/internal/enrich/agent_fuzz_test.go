package enrich

import (
	"net/netip"
	"testing"

	"github.com/haru-analytics/haru/pkg/event"
	"github.com/haru-analytics/haru/services/ingest/internal/bot"
)

// FuzzUserAgent runs a User-Agent the way a beacon's does: the parser, the device class
// and the bot check. Whatever the header holds, the fields are storable, the device is
// one of the classes, and the same header always reads the same.
func FuzzUserAgent(f *testing.F) {
	for _, ua := range []string{
		"Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
		"Googlebot/2.1 (+http://www.google.com/bot.html)",
		"", "\xff\xfe", "Mozilla/5.0 (\x00)", "((((((((", "Mozilla/5.0 (Linux; Android 14; SM-X910) AppleWebKit/537.36 Chrome/124.0 Safari/537.36",
	} {
		f.Add(ua, "prefetch", 1280)
	}
	agents := NewAgents()
	classes := map[string]bool{"": true, DeviceMobile: true, DeviceTablet: true, DeviceLaptop: true, DeviceDesktop: true, DeviceTV: true}
	f.Fuzz(func(t *testing.T, ua, purpose string, screenW int) {
		got := agents.Parse(ua)
		if again := agents.Parse(ua); again != got {
			t.Fatalf("Parse(%q) = %+v, then %+v", ua, got, again)
		}
		device := Device(got.Device, screenW)
		for _, s := range []string{got.Browser, got.OS, device} {
			if !event.Storable(s) || len(s) > 100 {
				t.Fatalf("Parse(%q) gave %q: not storable or too long", ua, s)
			}
		}
		if !classes[device] {
			t.Fatalf("Device(%q, %d) = %q: not a device class", got.Device, screenW, device)
		}
		verdict := bot.UserAgent(ua, got.Bot)
		if verdict != "" && verdict != bot.ReasonUserAgent {
			t.Fatalf("UserAgent(%q) = %q: not a drop reason", ua, verdict)
		}
		if r := bot.Check(bot.Request{Agent: verdict, Purpose: purpose, SecPurpose: purpose, XMoz: purpose}); r != verdict && r != bot.ReasonPrefetch {
			t.Fatalf("Check(%q, purpose %q) = %q: neither the User-Agent's verdict nor a prefetch", ua, purpose, r)
		}
	})
}

// FuzzGeoHeaders: a CDN's country and region headers, whatever they hold, give a
// two-letter country or none and a storable region of at most six characters or none.
func FuzzGeoHeaders(f *testing.F) {
	f.Add([]byte{8, 8, 8, 8}, "US", "CA", true)
	f.Add([]byte{}, "XX", "US-CA", true)
	f.Add([]byte{32, 1, 13, 184, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, "de", "\xff", false)
	f.Fuzz(func(t *testing.T, ip []byte, country, region string, trusted bool) {
		addr, _ := netip.AddrFromSlice(ip)
		c := Country(addr, country, trusted)
		if c != "" && !isCountry(c) {
			t.Fatalf("Country(%s, %q) = %q", addr, country, c)
		}
		r := Region(c, region, trusted)
		if !event.Storable(r) || len(r) > 2+1+6 {
			t.Fatalf("Region(%q, %q) = %q", c, region, r)
		}
	})
}

// FuzzPagePath: the tracker's own path beside the page URL, as the collect handler
// passes both, yields storable fields.
func FuzzPagePath(f *testing.F) {
	f.Add("https://example.com/a?utm_source=x", "/b#c", false)
	f.Add("", "/#/route?x=1", true)
	f.Fuzz(func(t *testing.T, raw, path string, hash bool) {
		if !event.Storable(raw) || !event.Storable(path) {
			return // the payload parser refuses these first
		}
		p := ParsePage(raw, path, hash)
		for _, s := range []string{p.Host, p.Path, p.UTM.Source, p.UTM.Medium, p.UTM.Campaign, p.UTM.Term, p.UTM.Content} {
			if !event.Storable(s) {
				t.Fatalf("ParsePage(%q, %q) gave unstorable %q", raw, path, s)
			}
		}
	})
}
