package bot

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	firefox := "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
	// req is a beacon's request as it reaches the check: the User-Agent's verdict in it.
	type request struct {
		UserAgent                 string
		ParserBot                 bool
		Purpose, SecPurpose, XMoz string
	}
	tests := []struct {
		name string
		req  request
		want string
	}{
		{"browser", request{UserAgent: firefox}, ""},
		{"empty", request{}, ""},
		{"curl counts", request{UserAgent: "curl/8.5.0", ParserBot: true}, ""},
		{"wget counts", request{UserAgent: "Wget/1.21", ParserBot: true}, ""},
		{"parser bot", request{UserAgent: "SomethingOdd/1.0", ParserBot: true}, ReasonUserAgent},
		{"googlebot", request{UserAgent: "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, ReasonUserAgent},
		{"headless", request{UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"}, ReasonUserAgent},
		{"spider", request{UserAgent: "Baiduspider+(+http://www.baidu.com/search/spider.htm)"}, ReasonUserAgent},
		{"crawler", request{UserAgent: "SomeCrawler/2.0"}, ReasonUserAgent},
		{"purpose prefetch", request{UserAgent: firefox, Purpose: "prefetch"}, ReasonPrefetch},
		{"sec-purpose", request{UserAgent: firefox, SecPurpose: "prefetch;prerender"}, ReasonPrefetch},
		{"x-moz", request{UserAgent: firefox, XMoz: "prefetch"}, ReasonPrefetch},
		{"prefetch beats curl", request{UserAgent: "curl/8", Purpose: "Prefetch"}, ReasonPrefetch},
		{"other purpose", request{UserAgent: firefox, Purpose: "preview-other"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := tt.req
			got := Check(Request{Agent: UserAgent(r.UserAgent, r.ParserBot), Purpose: r.Purpose, SecPurpose: r.SecPurpose, XMoz: r.XMoz})
			if got != tt.want {
				t.Fatalf("Check(%+v) = %q, want %q", tt.req, got, tt.want)
			}
		})
	}
}

func FuzzContainsFold(f *testing.F) {
	f.Add("HeadlessChrome", "headless")
	f.Add("", "bot")
	f.Fuzz(func(t *testing.T, s, sub string) {
		sub = strings.ToLower(sub)
		want := strings.Contains(asciiLower(s), sub)
		if got := containsFold(s, sub); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, sub, got, want)
		}
	})
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lower(c)
	}
	return string(b)
}

func BenchmarkUserAgent(b *testing.B) {
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36"
	b.ReportAllocs()
	for b.Loop() {
		if UserAgent(ua, false) != "" {
			b.Fatal("a browser flagged")
		}
	}
}
